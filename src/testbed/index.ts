/** The testbed: emulated edge hosts in network namespaces, shaped links, and the service network. */
export {
  LINK_PROFILES,
  LINK_PROFILE_NAMES,
  formatLinkSpec,
  linkProfile,
  parseLinkSpec,
  validateLinkSpec,
} from './profiles.js';
export {
  AGENT_PORT,
  DEFAULT_TESTBED_NAME,
  MAX_HOSTS,
  SERVICE_NETWORK,
  HOST_NETWORK,
  containerNetns,
  hostNetns,
  switchNetns,
  clientNetns,
  pairKey,
  validateTestbedName,
} from './topology.js';
export { readTestbed, readTestbedFile, testbedDir, testbedFile, type TestbedRecord } from './testbed-file.js';
export {
  describeLinks,
  testbedDown,
  testbedStatus,
  testbedUp,
  type TestbedDownOptions,
  type TestbedDownReport,
  type TestbedHostStatus,
  type TestbedStatus,
  type TestbedUpOptions,
} from './testbed.js';
export {
  ServiceNetwork,
  loadServiceNetwork,
  macForIp,
  type ServiceNetworkOptions,
} from './service-network.js';
export { healthz } from './agents.js';
