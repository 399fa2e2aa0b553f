import { ServerConnection } from '@jupyterlab/services';

import { API_PREFIX, ApiError, json, requestAPI } from '../src/request';
import { closedPortUrl, TestServer } from './server';

describe('requestAPI', () => {
  const server = new TestServer();
  let settings: ServerConnection.ISettings;

  beforeAll(async () => {
    const baseUrl = await server.start();
    settings = ServerConnection.makeSettings({ baseUrl, token: 'secret-token' });
  });
  afterAll(() => server.stop());
  beforeEach(() => {
    server.requests.length = 0;
    server.routes.clear();
  });

  it('joins the base URL, the API prefix and the endpoint and returns the parsed JSON', async () => {
    server.on('GET /wolt-jupyter/api/models', { body: { models: [{ name: 'iris' }] } });
    const data = await requestAPI<{ models: { name: string }[] }>('models', {}, settings);
    expect(data).toEqual({ models: [{ name: 'iris' }] });
    expect(API_PREFIX).toBe('wolt-jupyter/api');
    expect(server.requests.map(r => `${r.method} ${r.path}`)).toEqual(['GET /wolt-jupyter/api/models']);
  });

  it('keeps a base URL path and a query in the endpoint', async () => {
    const prefixed = ServerConnection.makeSettings({ baseUrl: `${settings.baseUrl}user/ana/`, token: 't' });
    server.on('GET /user/ana/wolt-jupyter/api/deployments/iris/metrics', r => ({
      body: { since: r.query.get('since'), step: r.query.get('step') }
    }));
    const data = await requestAPI<{ since: string; step: string }>(
      'deployments/iris/metrics?since=30m&step=15s',
      {},
      prefixed
    );
    expect(data).toEqual({ since: '30m', step: '15s' });
  });

  it("sends the server's token", async () => {
    server.on('GET /wolt-jupyter/api/settings', { body: {} });
    await requestAPI('settings', {}, settings);
    expect(server.requests[0].headers.authorization).toBe('token secret-token');
  });

  it('sends a JSON body built by json()', async () => {
    server.on('PUT /wolt-jupyter/api/deployments/iris/traffic', r => ({ body: JSON.parse(r.body) }));
    const init = json('PUT', { weights: { main: 90, canary: 10 } });
    expect(init).toEqual({ method: 'PUT', body: '{"weights":{"main":90,"canary":10}}' });
    const echoed = await requestAPI('deployments/iris/traffic', init, settings);
    expect(echoed).toEqual({ weights: { main: 90, canary: 10 } });
    expect(json('DELETE')).toEqual({ method: 'DELETE' });
  });

  it('returns null for an empty 2xx body', async () => {
    server.on('DELETE /wolt-jupyter/api/deployments/iris', { status: 204 });
    await expect(requestAPI('deployments/iris', json('DELETE'), settings)).resolves.toBeNull();
  });

  it('turns a server\'s {"error": ...} into an ApiError with that message and the status', async () => {
    server.on('POST /wolt-jupyter/api/deployments', {
      status: 409,
      body: { error: "deployment 'iris' already exists" }
    });
    const error = await requestAPI('deployments', json('POST', {}), settings).catch(e => e);
    expect(error).toBeInstanceOf(ApiError);
    expect(error.message).toBe("deployment 'iris' already exists");
    expect(error.status).toBe(409);
  });

  it('turns Jupyter\'s {"message": ...} (e.g. a 403 from the server itself) into the ApiError\'s message', async () => {
    server.on('GET /wolt-jupyter/api/models', {
      status: 403,
      body: { message: "'_xsrf' argument missing", reason: null }
    });
    const error = await requestAPI('models', {}, settings).catch(e => e);
    expect(error).toBeInstanceOf(ApiError);
    expect(error.message).toBe("'_xsrf' argument missing");
    expect(error.status).toBe(403);
  });

  it('uses the status line when the error body has no message', async () => {
    server.on('GET /wolt-jupyter/api/models', { status: 502, body: {} });
    const error = await requestAPI('models', {}, settings).catch(e => e);
    expect(error.message).toBe('502 Bad Gateway');
    expect(error.status).toBe(502);
  });

  it('uses a non-JSON error body as the message', async () => {
    server.on('GET /wolt-jupyter/api/models', { status: 500, raw: 'MLflow tracking store is locked' });
    const error = await requestAPI('models', {}, settings).catch(e => e);
    expect(error.message).toBe('MLflow tracking store is locked');
    expect(error.status).toBe(500);
  });

  it('turns a network failure into one readable line with status 0', async () => {
    const down = ServerConnection.makeSettings({ baseUrl: await closedPortUrl() });
    const error = await requestAPI('models', {}, down).catch(e => e);
    expect(error).toBeInstanceOf(ApiError);
    expect(error.status).toBe(0);
    expect(error.message).toMatch(/^the Jupyter server cannot be reached: \S/);
    expect(error.message).not.toContain('\n');
  });
});
