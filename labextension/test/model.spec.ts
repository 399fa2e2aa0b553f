import { PageConfig } from '@jupyterlab/coreutils';

import { rebalance, Snippets, WoltModel } from '../src/model';
import { IDeployment, IRegisteredModel } from '../src/tokens';
import { TestServer } from './server';

const API = '/wolt-jupyter/api';

const iris: IRegisteredModel = { name: 'iris', aliases: { champion: '2' }, versions: [] };
const wine: IRegisteredModel = { name: 'wine', aliases: { canary: '1' }, versions: [] };

function deployment(name: string, ...models: string[]): IDeployment {
  return {
    name,
    target: 'local',
    status: 'running',
    url: null,
    revision: 1,
    variants: models.map((model, i) => ({ name: i ? `v${i}` : 'main', model, traffic: null, shadow: false }))
  };
}

/** Each `changed` emission with the model's `loading` at that moment. */
function watch(model: WoltModel): boolean[] {
  const seen: boolean[] = [];
  model.changed.connect(m => seen.push(m.loading));
  return seen;
}

describe('WoltModel', () => {
  const server = new TestServer();

  beforeAll(async () => {
    // The model calls the API with the page's settings, as in JupyterLab: point the page at the test server.
    PageConfig.setOption('baseUrl', await server.start());
  });
  afterAll(() => server.stop());
  beforeEach(() => {
    server.requests.length = 0;
    server.routes.clear();
    server.on(`GET ${API}/models`, { body: { models: [iris, wine] } });
    server.on(`GET ${API}/deployments`, { body: { deployments: [deployment('iris-prod', 'models:/iris@champion')] } });
  });

  it('refresh loads models and deployments and signals loading, then loaded', async () => {
    const model = new WoltModel();
    const seen = watch(model);
    const done = model.refresh();
    expect(model.loading).toBe(true);
    expect(seen).toEqual([true]);
    await done;
    expect(seen).toEqual([true, false]);
    expect(model.loading).toBe(false);
    expect(model.error).toBeNull();
    expect(model.models.map(m => m.name)).toEqual(['iris', 'wine']);
    expect(model.deployments.map(d => d.name)).toEqual(['iris-prod']);
  });

  it("refresh keeps what it had for a failing call and names the failure with the server's message", async () => {
    const model = new WoltModel();
    await model.refresh();
    server.on(`GET ${API}/models`, { status: 503, body: { error: 'tracking store unavailable' } });
    server.on(`GET ${API}/deployments`, { body: { deployments: [] } });
    await model.refresh();
    expect(model.error).toBe('registry: tracking store unavailable');
    expect(model.models.map(m => m.name)).toEqual(['iris', 'wine']);
    expect(model.deployments).toEqual([]);
    expect(model.loading).toBe(false);

    server.on(`GET ${API}/models`, { body: { models: [wine] } });
    server.on(`GET ${API}/deployments`, { status: 500, body: { message: 'boom' } });
    await model.refresh();
    expect(model.error).toBe('deployments: boom');
    expect(model.models.map(m => m.name)).toEqual(['wine']);

    server.on(`GET ${API}/models`, { body: { models: [] } });
    server.on(`GET ${API}/deployments`, { body: { deployments: [] } });
    await model.refresh();
    expect(model.error).toBeNull();
    expect(model.models).toEqual([]);
  });

  it('filters models by name or alias and deployments by name or variant model', async () => {
    const model = new WoltModel();
    server.on(`GET ${API}/deployments`, {
      body: { deployments: [deployment('iris-prod', 'models:/iris/2'), deployment('other', 'models:/wine/1')] }
    });
    await model.refresh();
    const seen = watch(model);
    model.setFilter('  CANARY ');
    expect(seen).toHaveLength(1);
    expect(model.visibleModels.map(m => m.name)).toEqual(['wine']);
    model.setFilter('wine');
    expect(model.visibleDeployments.map(d => d.name)).toEqual(['other']);
    model.setFilter('');
    expect(model.visibleModels).toBe(model.models);
    expect(model.visibleDeployments).toBe(model.deployments);
  });

  it('loads settings once', async () => {
    server.on(`GET ${API}/settings`, { body: { target: 'local' } });
    const model = new WoltModel();
    const first = await model.loadSettings();
    const second = await model.loadSettings();
    expect(first).toEqual({ target: 'local' });
    expect(second).toBe(first);
    expect(server.requests.filter(r => r.path === `${API}/settings`)).toHaveLength(1);
  });

  it('deploy posts the request and refreshes, but not for a dry run', async () => {
    server.on(`POST ${API}/deployments`, r => ({ status: 201, body: deployment(JSON.parse(r.body).name, 'm') }));
    const model = new WoltModel();
    const request = { name: 'iris-prod', spec: { variants: [] }, dry_run: true } as any;
    expect((await model.deploy(request)).name).toBe('iris-prod');
    expect(server.requests.map(r => `${r.method} ${r.path}`)).toEqual([`POST ${API}/deployments`]);
    expect(JSON.parse(server.requests[0].body)).toEqual(request);

    server.requests.length = 0;
    await model.deploy({ ...request, dry_run: false });
    expect(server.requests.map(r => `${r.method} ${r.path}`).sort()).toEqual([
      `GET ${API}/deployments`,
      `GET ${API}/models`,
      `POST ${API}/deployments`
    ]);
    expect(model.deployments.map(d => d.name)).toEqual(['iris-prod']);
  });

  it('actions call their endpoint with their body, then refresh', async () => {
    const d = deployment('iris-prod', 'm');
    server.on(`PUT ${API}/deployments/iris-prod/traffic`, { body: d });
    server.on(`POST ${API}/deployments/iris-prod/promote`, { body: d });
    server.on(`POST ${API}/deployments/iris-prod/rollback`, { body: d });
    server.on(`POST ${API}/deployments/iris-prod/rollout`, { body: { command: 'pause', state: 'paused' } });
    server.on(`DELETE ${API}/deployments/iris-prod`, { status: 204 });
    const model = new WoltModel();
    const seen = watch(model);

    await model.traffic('iris-prod', { main: 80, v1: 20 });
    await model.promote('iris-prod', 'v1');
    await model.rollback('iris-prod');
    expect(await model.steer('iris-prod', 'pause')).toEqual({ command: 'pause', state: 'paused' });
    await model.undeploy('iris-prod');

    const calls = server.requests
      .filter(r => r.method !== 'GET')
      .map(r => [`${r.method} ${r.path}`, r.body && JSON.parse(r.body)]);
    expect(calls).toEqual([
      [`PUT ${API}/deployments/iris-prod/traffic`, { weights: { main: 80, v1: 20 } }],
      [`POST ${API}/deployments/iris-prod/promote`, { variant: 'v1' }],
      [`POST ${API}/deployments/iris-prod/rollback`, ''],
      [`POST ${API}/deployments/iris-prod/rollout`, { command: 'pause' }],
      [`DELETE ${API}/deployments/iris-prod`, '']
    ]);
    // five actions, each followed by one refresh (two GETs, two signals)
    expect(server.requests.filter(r => r.method === 'GET')).toHaveLength(10);
    expect(seen).toEqual([true, false, true, false, true, false, true, false, true, false]);
  });

  it('a failing action rejects with the server message and does not refresh', async () => {
    server.on(`POST ${API}/deployments/iris-prod/promote`, {
      status: 400,
      body: { error: "no variant 'v9' in deployment 'iris-prod'" }
    });
    const model = new WoltModel();
    await expect(model.promote('iris-prod', 'v9')).rejects.toThrow("no variant 'v9' in deployment 'iris-prod'");
    expect(server.requests.filter(r => r.method === 'GET')).toHaveLength(0);
  });

  it('metrics sends since, step and the revision only when given', async () => {
    server.on(`GET ${API}/deployments/iris-prod/metrics`, r => ({
      body: { since: r.query.get('since'), step: r.query.get('step'), revision: r.query.get('revision') }
    }));
    const model = new WoltModel();
    expect(await model.metrics('iris-prod', '30m', '15s')).toEqual({ since: '30m', step: '15s', revision: null });
    expect(await model.metrics('iris-prod', '1h', '1m', '3')).toEqual({ since: '1h', step: '1m', revision: '3' });
  });

  describe('polling', () => {
    beforeAll(() => {
      // model.ts polls with window.setInterval, as in the browser; Node's timers stand in for the window's.
      (globalThis as any).window = globalThis;
    });
    afterAll(() => {
      delete (globalThis as any).window;
    });

    /** Resolves once the model has finished `count` refreshes (a `changed` with loading false). */
    function refreshes(model: WoltModel, count: number): Promise<void> {
      return new Promise(resolve => {
        let seen = 0;
        model.changed.connect(m => {
          if (!m.loading && ++seen === count) {
            resolve();
          }
        });
      });
    }
    const sleep = (ms: number) => new Promise(resolve => setTimeout(resolve, ms));

    it('refreshes at once, then every interval, and stops', async () => {
      const model = new WoltModel();
      model.refreshInterval = 0.05;
      const three = refreshes(model, 3);
      expect(model.polling).toBe(false);
      model.startPolling();
      expect(model.polling).toBe(true);
      await three;
      model.stopPolling();
      expect(model.polling).toBe(false);
      while (model.loading) {
        await sleep(10);
      }
      const count = server.requests.length;
      expect(count).toBeGreaterThanOrEqual(6);
      await sleep(300);
      expect(server.requests.length).toBe(count);
    });

    it('with interval 0 refreshes once and does not poll', async () => {
      const model = new WoltModel();
      model.refreshInterval = 0;
      const once = refreshes(model, 1);
      model.startPolling();
      expect(model.polling).toBe(false);
      await once;
      await sleep(200);
      expect(server.requests.map(r => r.path).sort()).toEqual([`${API}/deployments`, `${API}/models`]);
    });
  });
});

describe('rebalance', () => {
  it.each([
    [[50, 50], 0, 80, [80, 20]],
    [[60, 30, 10], 0, 40, [40, 45, 15]],
    [[100, 0, 0], 0, 70, [70, 15, 15]],
    [[34, 33, 33], 1, 50, [25, 50, 25]],
    [[70, 30], 1, 140, [0, 100]],
    [[70, 30], 1, -5, [100, 0]],
    [[100], 0, 30, [100]]
  ])('rebalance(%j, %i, %d) = %j', (weights, index, value, expected) => {
    const out = rebalance(weights, index, value);
    expect(out).toEqual(expected);
    expect(out.reduce((a, b) => a + b, 0)).toBe(100);
  });

  it('gives the rounding to the largest remainders', () => {
    expect(rebalance([1, 1, 1], 0, 0)).toEqual([0, 50, 50]);
    expect(rebalance([10, 20, 30, 40], 3, 1)).toEqual([17, 33, 49, 1]);
  });
});

describe('Snippets', () => {
  it('writes the magic line a deploy would run', () => {
    const line = Snippets.deploy({
      name: 'iris-prod',
      spec: {
        variants: [
          { name: 'main', model: 'models:/iris@champion', traffic: 90, shadow: false },
          { name: 'canary', model: 'models:/iris/3', traffic: 10, shadow: false },
          { name: 'shadow', model: 'models:/iris/4', traffic: null, shadow: true }
        ],
        routing: { sticky_key: 'user_id' }
      },
      target: 'k8s',
      dry_run: true
    } as any);
    expect(line).toBe(
      '%wolt_deploy iris-prod --model models:/iris@champion --ab canary:models:/iris/3=10 ' +
        '--shadow shadow:models:/iris/4 --sticky-key user_id --target k8s --dry-run'
    );
    expect(Snippets.traffic('iris-prod', { main: 80, canary: 20 })).toBe('%wolt_traffic iris-prod main=80 canary=20');
  });
});
