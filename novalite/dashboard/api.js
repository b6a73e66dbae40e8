// The public APIs, called exactly as the CLI calls them: a Keystone v3 password login whose
// X-Subject-Token is kept in sessionStorage (gone when the tab closes), then Nova v2.1 with an
// explicit microversion and Glance v2 with that token. Paths are relative to the page, so the
// dashboard works wherever the API is mounted.

const SESSION_KEY = "novalite.dashboard.session";

// 2.87: the last microversion whose os-hypervisors/detail still reports used vCPU/RAM/disk
// (2.88 dropped them); it has everything else the dashboard needs (networks auto/none, embedded
// flavors, remote consoles).
export const COMPUTE_VERSION = "2.87";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function loadSession() {
  try {
    const session = JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
    if (session && session.token && Date.parse(session.expires) > Date.now()) return session;
  } catch (_e) {
    // a damaged entry: log in again
  }
  clearSession();
  return null;
}

export function saveSession(session) {
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
}

export function clearSession() {
  sessionStorage.removeItem(SESSION_KEY);
}

function apiUrl(path) {
  return new URL(path, document.baseURI).href;
}

// The message of an OpenStack error body: Nova {"badRequest": {"message"}}, Keystone
// {"error": {"message"}}, Glance's plain text; else the HTTP status.
async function errorMessage(response) {
  const text = await response.text();
  try {
    const body = JSON.parse(text);
    for (const value of Object.values(body)) {
      if (value && typeof value.message === "string") return value.message;
    }
  } catch (_e) {
    if (text && text.length < 500 && !text.trimStart().startsWith("<")) return text.trim();
  }
  return `${response.status} ${response.statusText}`;
}

let onUnauthorized = () => {};

// callback(session, message): a call made with ``session`` was refused with 401 (expired or revoked).
export function whenUnauthorized(callback) {
  onUnauthorized = callback;
}

export async function request(method, path, { session, json, body, headers = {} } = {}) {
  const init = { method, headers: { Accept: "application/json", ...headers } };
  if (session) init.headers["X-Auth-Token"] = session.token;
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (body !== undefined) {
    init.body = body;
  }
  const response = await fetch(apiUrl(path), init);
  if (!response.ok) {
    const message = await errorMessage(response);
    if (response.status === 401 && session) onUnauthorized(session, message);
    throw new ApiError(response.status, message);
  }
  return response;
}

async function jsonOf(response) {
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

export async function login(user, password, project) {
  const auth = {
    identity: {
      methods: ["password"],
      password: { user: { name: user, domain: { id: "default" }, password } },
    },
    scope: { project: { name: project, domain: { id: "default" } } },
  };
  const response = await request("POST", "identity/v3/auth/tokens", { json: { auth } });
  const { token } = await jsonOf(response);
  const roles = (token.roles || []).map((role) => role.name);
  return {
    token: response.headers.get("X-Subject-Token"),
    expires: token.expires_at,
    user: { id: token.user.id, name: token.user.name },
    project: { id: token.project.id, name: token.project.name },
    roles,
    isAdmin: roles.includes("admin"),
    canWrite: roles.some((role) => ["admin", "manager", "member"].includes(role)),
  };
}

export async function logout(session) {
  await request("DELETE", "identity/v3/auth/tokens", {
    session,
    headers: { "X-Subject-Token": session.token },
  });
}

export async function compute(session, method, path, json) {
  const headers = { "OpenStack-API-Version": `compute ${COMPUTE_VERSION}` };
  return jsonOf(await request(method, `compute/v2.1/${path}`, { session, json, headers }));
}

export async function image(session, method, path, options = {}) {
  return jsonOf(await request(method, `image/v2/${path}`, { session, ...options }));
}

// Every image the project sees, following Glance's "next" links.
export async function listImages(session) {
  const images = [];
  let path = "images?limit=200";
  for (let page = 0; path && page < 20; page++) {
    const body = await image(session, "GET", path);
    images.push(...body.images);
    path = body.next ? body.next.replace(/^\/v2\//, "") : null;
  }
  return images;
}

export async function uploadImage(session, { name, diskFormat, visibility, file }) {
  const created = await image(session, "POST", "images", {
    json: { name, disk_format: diskFormat, container_format: "bare", visibility },
  });
  await request("PUT", `image/v2/images/${encodeURIComponent(created.id)}/file`, {
    session,
    body: file,
    headers: { "Content-Type": "application/octet-stream" },
  });
  return created;
}

export function serverAction(session, serverId, action) {
  return compute(session, "POST", `servers/${encodeURIComponent(serverId)}/action`, action);
}
