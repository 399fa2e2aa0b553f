/**
 * The one typed way to call the server extension: every request carries the server's credential (through
 * ServerConnection) and every error answer becomes an ApiError with the server's one-line message.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

export const API_PREFIX = 'wolt-jupyter/api';

export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number
  ) {
    super(message);
  }
}

export async function requestAPI<T>(
  endPoint: string,
  init: RequestInit = {},
  settings: ServerConnection.ISettings = ServerConnection.makeSettings()
): Promise<T> {
  const url = URLExt.join(settings.baseUrl, API_PREFIX, endPoint);
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (error) {
    throw new ApiError(`the Jupyter server cannot be reached: ${error}`, 0);
  }
  const text = await response.text();
  let data: any = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = { error: text };
    }
  }
  if (!response.ok) {
    // Our handlers answer {"error": ...}; the Jupyter server's own errors (403 for a missing XSRF token, 404 for
    // an unknown route) answer {"message": ...}.
    const message = data?.error ?? data?.message;
    throw new ApiError(message ? String(message) : `${response.status} ${response.statusText}`, response.status);
  }
  return data as T;
}

/** A JSON body for POST/PUT. */
export function json(method: string, body?: unknown): RequestInit {
  return body === undefined ? { method } : { method, body: JSON.stringify(body) };
}
