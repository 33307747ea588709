/**
 * Post-copy page serving: a page server that CRIU's lazy-pages daemon fetches the restored
 * processes' pages from, backed by a `LazyPageProvider`.
 */
export {
  DEFAULT_MAX_OUTSTANDING_REQUESTS,
  DEFAULT_MAX_PAGES_PER_REQUEST,
  percentile,
  startCriuPageServer,
  type CriuPageServer,
  type CriuPageServerOptions,
  type LazyPageProvider,
  type PageServerSessionResult,
  type PageServerStats,
} from './criu-page-server.js';
export {
  PS_ANSWER_FLAGS,
  PS_IOV_SIZE,
  PsCmd,
  decodePageServerIov,
  encodeGetAnswer,
  encodePageServerIov,
  encodePsCmd,
  psCommand,
  psFlags,
  type PageServerIov,
  type PsCmdValue,
} from './page-server-iov.js';
export {
  EVERY_LAZY_PAGE,
  LazyPageBroker,
  type LazyPageBrokerOptions,
  type LazyPageStats,
  type PageFetchClient,
  type RemoteRun,
} from './lazy-page-broker.js';
export {
  MAX_FETCH_PAGES,
  PAGE_FETCH_TOKEN_BYTES,
  PageFetcher,
  findRun,
  startPageSource,
  type PageSource,
  type PageSourceOptions,
  type PageSourceStats,
} from './page-fetch.js';
