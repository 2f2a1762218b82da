// Who is signed in: the JWT the API's authorizer checks. Locally the token comes from the local stack's issuer (a
// sign-in link carries it in the fragment, or it is pasted); in AWS from Cognito's hosted UI (authorization code
// grant with PKCE, D451: the redirect brings a one-time code, which this page redeems at the token endpoint for the
// ID token that carries the kilo_* claims; no token rides in a URL). Kept in sessionStorage only.
const KEY = "kilo.token";

export function claimsOf(token) {
  const part = token.split(".")[1];
  if (!part) throw new Error("not a JWT");
  const json = atob(part.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(part.length / 4) * 4, "="));
  return JSON.parse(new TextDecoder().decode(Uint8Array.from(json, (c) => c.charCodeAt(0))));
}

export function session() {
  const token = sessionStorage.getItem(KEY);
  if (!token) return null;
  try {
    // expiry is the API's to judge (its 401 signs the person out): this browser's clock may differ from the issuer's
    const claims = claimsOf(token);
    return {
      token,
      user: claims.email || claims.sub,
      sub: claims.sub, // the user ID the members table keys on (an invitation is to it, D200)
      account: claims.kilo_account, // none for a user who belongs to no account yet: only their invitations
      role: claims.kilo_role || "member",
      canManage: claims.kilo_role === "owner" || claims.kilo_role === "admin",
    };
  } catch {
    signOut();
    return null;
  }
}

// A token naming no account (claim kilo_account) is a person who belongs to none yet: invited to a first account,
// they answer their invitations (the Members page) and act for the account at their next sign-in.
export function signIn(token) {
  const claims = claimsOf(token.trim()); // throws on anything that is not a JWT
  if (!claims.sub) throw new Error("this token names no user (claim sub)");
  sessionStorage.setItem(KEY, token.trim());
}

export function signOut() {
  sessionStorage.removeItem(KEY);
}

// A sign-in's answer in the URL: Cognito's in the query (?code=...&state=..., or ?error=...&state=...), a local
// sign-in link's in the fragment (#token=..., or #id_token=...: a Cognito site takes neither, D451). Read it and
// drop it from the address bar and history at once; whether it is taken is decided once the site's config says how
// people sign in here (acceptSignIn).
export function signInFromUrl() {
  const query = new URLSearchParams(window.location.search);
  const hash = window.location.hash.replace(/^#\/?/, "");
  const params = new URLSearchParams(hash.includes("?") ? hash.split("?")[1] : hash);
  const found = {
    code: query.get("code"),
    error: query.get("error"),
    state: query.get("state") || params.get("state"),
    token: params.get("token"),
    idToken: params.get("id_token"),
  };
  if (!found.code && !found.error && !found.token && !found.idToken) return null;
  history.replaceState(null, "", window.location.pathname + "#/usage");
  return found;
}

const STATE = "kilo.signin.state";
const NONCE = "kilo.signin.nonce";
const VERIFIER = "kilo.signin.verifier";

function base64url(bytes) {
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function randomText() {
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}

// The page's own address: the redirect_uri of the authorize request and, identical, of the code's redemption.
function redirectUri() {
  return window.location.origin + window.location.pathname;
}

// Takes (once) what this tab kept for the sign-in it started.
function takeKept() {
  const kept = { state: sessionStorage.getItem(STATE), nonce: sessionStorage.getItem(NONCE),
    verifier: sessionStorage.getItem(VERIFIER) };
  for (const key of [STATE, NONCE, VERIFIER]) sessionStorage.removeItem(key);
  return kept;
}

// Only a sign-in this page started is taken (no login CSRF: a link carrying someone else's code or token must not
// sign this browser into their account). Cognito: the code must come back with the state this tab sent; it is
// redeemed with this tab's PKCE verifier, and the ID token must carry this tab's nonce - all used once. Local stack:
// its issuer's links (#token=...) are how the demo signs people in - taken only when the loaded config.json says
// mode "local" (`auth` null: it could not be read).
export async function acceptSignIn(found, auth) {
  if (!found) return false;
  if (!auth) throw new Error("the dashboard's configuration could not be read, so no sign-in link is taken: reload the page");
  if (auth.mode === "cognito") {
    const kept = takeKept();
    if (!(found.code || found.error) || !kept.state || found.state !== kept.state) {
      throw new Error("this sign-in was not started from this page: sign in again");
    }
    if (found.error) throw new Error(`the sign-in was refused (${found.error})`);
    const idToken = await redeem(auth, found.code, kept.verifier);
    if (!kept.nonce || claimsOf(idToken).nonce !== kept.nonce) {
      throw new Error("this sign-in's token was not issued for this page: sign in again");
    }
    signIn(idToken);
    return true;
  }
  if (auth.mode !== "local") throw new Error(`this page does not take sign-in links (sign-in mode ${auth.mode})`);
  if (!found.token && !found.idToken) throw new Error("this page takes only the local stack's sign-in links");
  signIn(found.token || found.idToken);
  return true;
}

// The token endpoint's answer to the code (RFC 6749 4.1.3, RFC 7636 4.5): the ID token, or an error naming why.
async function redeem(auth, code, verifier) {
  const body = new URLSearchParams({ grant_type: "authorization_code", client_id: auth.clientId, code,
    redirect_uri: redirectUri(), code_verifier: verifier || "" });
  let response;
  try {
    response = await fetch(auth.tokenUrl, { method: "POST", body, credentials: "omit", cache: "no-store" });
  } catch {
    throw new Error("the sign-in service could not be reached: sign in again");
  }
  const answer = await response.json().catch(() => ({}));
  if (!response.ok || !answer.id_token) {
    throw new Error(`the sign-in could not be completed (${answer.error || response.status}): sign in again`);
  }
  return answer.id_token;
}

// The hosted UI's address for a code with a PKCE S256 challenge, a fresh state and nonce; the verifier, state and
// nonce kept in this tab for acceptSignIn.
export async function cognitoSignInUrl(auth) {
  const state = randomText();
  const nonce = randomText();
  const verifier = base64url(crypto.getRandomValues(new Uint8Array(32))); // 43 characters (RFC 7636 4.1)
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier));
  sessionStorage.setItem(STATE, state);
  sessionStorage.setItem(NONCE, nonce);
  sessionStorage.setItem(VERIFIER, verifier);
  const url = new URL(auth.authorizeUrl);
  url.searchParams.set("response_type", "code");
  url.searchParams.set("client_id", auth.clientId);
  url.searchParams.set("scope", "openid email");
  url.searchParams.set("redirect_uri", redirectUri());
  url.searchParams.set("state", state);
  url.searchParams.set("nonce", nonce);
  url.searchParams.set("code_challenge", base64url(new Uint8Array(digest)));
  url.searchParams.set("code_challenge_method", "S256");
  return url.toString();
}
