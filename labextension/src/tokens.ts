/**
 * Shapes of the server extension's JSON (wolt_jupyter/server/openapi.yaml) and the command ids.
 */

export const PLUGIN_ID = 'wolt-jupyter:plugin';

export namespace CommandIDs {
  export const openSidebar = 'wolt:open-sidebar';
  export const refresh = 'wolt:refresh';
  export const deploy = 'wolt:deploy';
  export const openDeployment = 'wolt:open-deployment';
  export const insertSnippet = 'wolt:insert-snippet';
}

export interface IModelVersion {
  version: string;
  uri: string;
  aliases: string[];
  status: string;
  run_id: string | null;
  created: number | null;
  source: string;
}

export interface IRegisteredModel {
  name: string;
  aliases: { [alias: string]: string };
  versions: IModelVersion[];
}

export interface IVariant {
  name: string;
  model: string;
  traffic: number | null;
  shadow: boolean;
}

export interface IDeployment {
  name: string;
  target: string;
  status: string;
  url: string | null;
  grpc_url?: string | null;
  revision: number | null;
  variants: IVariant[];
  namespace?: string | null;
  message?: string | null;
  manifests?: object[] | null;
  manifests_yaml?: string;
  diff?: string | null;
  restarts?: number | null;
}

export interface ISettings {
  version: string;
  targets: string[];
  default_target: string;
  namespace: string;
  tracking_uri: string;
  metrics_source: string;
}

export interface ISeries {
  time: number[];
  columns: { [column: string]: (number | null)[] };
}

/** Where a deployment revision began in the window: its first logged row. */
export interface IRevisionMark {
  /** epoch ms */
  time: number;
  revision: number;
  /** ``r3``, or ``r3 (same models)`` for a change that kept the models (its series continue) */
  label: string;
}

/** Which revisions a metrics answer read, and which ones the deployment has. */
export interface IRevisions {
  /** the ``revision`` parameter as the server read it: "since-deploy", "all", a number or several */
  asked: string | number | number[];
  /** false for a source whose series carry no revision (Prometheus): nothing to choose */
  follows: boolean;
  /** the revisions read; null: every one */
  read: number[] | null;
  /** null once undeployed */
  current: number | null;
  known: number[];
}

export interface IMonitorData {
  deployment: string;
  since: number;
  until: number;
  step: number;
  source: string;
  /** the source ``source`` was checked against (the response log, for Prometheus), or null */
  checked_against: string | null;
  message: string | null;
  shadows: string[];
  revision_marks: IRevisionMark[];
  revisions: IRevisions;
  requests: ISeries;
  error_rate: ISeries;
  latency: { [quantile: string]: ISeries };
  agreement: ISeries;
  log_health: ISeries;
  predictions: { edges: (number | null)[]; columns: { [variant: string]: (number | null)[] } };
  summary: { [key: string]: string | number | boolean | null }[];
}

export interface IUpdateDecision {
  /** epoch seconds, as the service records it */
  time?: number;
  action?: string;
  reason?: string;
  [key: string]: unknown;
}

/** The rollout of the update service as ``GET deployments/NAME/updates`` reports it. */
export interface IRollout {
  candidate: string;
  champion: string | null;
  step: string;
  outcome: string | null;
  /** why it is paused (by a person, or after a change by hand); null when it is not */
  paused: string | null;
  /** the step waiting for a person's approval, if one is */
  waiting_for: string | null;
  /** the commands that apply now: pause, resume, promote-now, abort, approve */
  commands: string[];
}

export interface IUpdates {
  deployment: string;
  running?: boolean;
  /** why the running service's looks keep failing, since when; null when it works */
  failing?: string | null;
  rollout?: IRollout | null;
  decisions: IUpdateDecision[];
}

/** What became of a rollout command: applied (``outcome``: the service's words) or queued for its next look. */
export interface ISteered {
  deployment: string;
  command: string;
  by: string;
  applied: boolean;
  outcome: string | null;
  message: string;
}

/** What the deploy dialog sends: a DeploymentSpec mapping plus target and dry run. */
export interface IDeployRequest {
  name: string;
  spec: {
    name: string;
    variants: { name: string; model: string; traffic?: number; shadow?: boolean }[];
    routing?: { sticky_key?: string | null };
  };
  target?: string;
  namespace?: string;
  dry_run?: boolean;
}
