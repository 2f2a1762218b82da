// The account API, with the signed-in person's token. Errors carry the API's own message (it names the problem).
import { session } from "./auth.js";

let base = "";

export function configure(apiBase) {
  base = (apiBase || "").replace(/\/$/, "");
}

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

export async function request(method, path, body, extra = {}) {
  return (await exchange(method, path, body, extra)).data;
}

// GET with the answer's ETag (GET .../usage: the subscription's version the page shows, D441).
export async function getTagged(path) {
  const { data, response } = await exchange("GET", path);
  return { data, etag: response.headers.get("ETag") };
}

async function exchange(method, path, body, extra = {}) {
  const headers = { Accept: "application/json", ...extra };
  const current = session();
  if (current) headers.Authorization = `Bearer ${current.token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(base + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = { message: text };
  }
  if (!response.ok) {
    throw new ApiError(response.status, messageOf(data) || `${method} ${path}: HTTP ${response.status}`, data);
  }
  return { data, response };
}

// The API's one error shape {code, message, field}; API Gateway's own answers (401 Unauthorized, 404, 429) carry
// only {message}. Both are read the same way.
function messageOf(data) {
  return data && typeof data.message === "string" ? data.message : "";
}

export const get = (path) => request("GET", path);
export const post = (path, body, headers) => request("POST", path, body ?? {}, headers);
export const put = (path, body) => request("PUT", path, body);
export const remove = (path) => request("DELETE", path);

export function accountPath(suffix = "") {
  const current = session();
  return `/v1/accounts/${encodeURIComponent(current.account)}${suffix}`;
}
