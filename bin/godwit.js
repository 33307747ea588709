#!/usr/bin/env node
// Entry point of the `godwit` command: runs the compiled CLI (npm run build).
import { main } from '../dist/cli/main.js';

process.exitCode = await main(process.argv.slice(2));
