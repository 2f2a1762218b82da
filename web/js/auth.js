// Who is signed in: the JWT the API's authorizer checks. Locally the token comes from the local stack's issuer (a
// sign-in link carries it in the fragment, or it is pasted); in AWS from Cognito's hosted UI (implicit flow: the
// ID token, which carries the kilo_* claims, returns in the redirect's fragment). Kept in sessionStorage only.
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

// A sign-in's answer in the URL's fragment (#token=... from a local sign-in link, #id_token=...&state=... from
// Cognito): read it and drop it from the address bar and history at once; whether it is accepted is decided once the
// site's config says how people sign in here (acceptSignIn).
export function signInFromUrl() {
  const hash = window.location.hash.replace(/^#\/?/, "");
  const params = new URLSearchParams(hash.includes("?") ? hash.split("?")[1] : hash);
  const found = { token: params.get("token"), idToken: params.get("id_token"), state: params.get("state") };
  if (!found.token && !found.idToken) return null;
  history.replaceState(null, "", window.location.pathname + "#/usage");
  return found;
}

const STATE = "kilo.signin.state";
const NONCE = "kilo.signin.nonce";

function randomText() {
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}

// Only a sign-in this page started is taken (no login CSRF: a link carrying someone else's token must not sign this
// browser into their account). Cognito: the ID token must come back with the state this tab sent and carry its
// nonce, both used once. Local stack: its issuer's links (#token=...) are how the demo signs people in - taken only
// when the loaded config.json says mode "local" (`auth` null: it could not be read).
export function acceptSignIn(found, auth) {
  if (!found) return false;
  if (!auth) throw new Error("the dashboard's configuration could not be read, so no sign-in link is taken: reload the page");
  if (auth.mode === "cognito") {
    const state = sessionStorage.getItem(STATE);
    const nonce = sessionStorage.getItem(NONCE);
    sessionStorage.removeItem(STATE);
    sessionStorage.removeItem(NONCE);
    if (!found.idToken || !state || found.state !== state) {
      throw new Error("this sign-in was not started from this page: sign in again");
    }
    if (!nonce || claimsOf(found.idToken).nonce !== nonce) {
      throw new Error("this sign-in's token was not issued for this page: sign in again");
    }
    signIn(found.idToken);
    return true;
  }
  if (auth.mode !== "local") throw new Error(`this page does not take sign-in links (sign-in mode ${auth.mode})`);
  signIn(found.token || found.idToken);
  return true;
}

// The hosted UI's address, with a fresh state and nonce kept in this tab for acceptSignIn.
export function cognitoSignInUrl(auth) {
  const state = randomText();
  const nonce = randomText();
  sessionStorage.setItem(STATE, state);
  sessionStorage.setItem(NONCE, nonce);
  const url = new URL(auth.authorizeUrl);
  url.searchParams.set("response_type", "token");
  url.searchParams.set("client_id", auth.clientId);
  url.searchParams.set("scope", "openid email");
  url.searchParams.set("redirect_uri", window.location.origin + window.location.pathname);
  url.searchParams.set("state", state);
  url.searchParams.set("nonce", nonce);
  return url.toString();
}
