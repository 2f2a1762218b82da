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
      account: claims.kilo_account,
      role: claims.kilo_role || "member",
      canManage: claims.kilo_role === "owner" || claims.kilo_role === "admin",
    };
  } catch {
    signOut();
    return null;
  }
}

export function signIn(token) {
  const claims = claimsOf(token.trim()); // throws on anything that is not a JWT
  if (!claims.kilo_account) throw new Error("this token names no account (claim kilo_account)");
  sessionStorage.setItem(KEY, token.trim());
}

export function signOut() {
  sessionStorage.removeItem(KEY);
}

// A token in the URL's fragment (#token=... from a local sign-in link, #id_token=... from Cognito): keep it, then
// drop it from the address bar and history.
export function takeTokenFromUrl() {
  const hash = window.location.hash.replace(/^#\/?/, "");
  const params = new URLSearchParams(hash.includes("?") ? hash.split("?")[1] : hash);
  const token = params.get("token") || params.get("id_token");
  if (!token) return false;
  signIn(token);
  history.replaceState(null, "", window.location.pathname + "#/usage");
  return true;
}

export function cognitoSignInUrl(auth) {
  const url = new URL(auth.authorizeUrl);
  url.searchParams.set("response_type", "token");
  url.searchParams.set("client_id", auth.clientId);
  url.searchParams.set("scope", "openid email");
  url.searchParams.set("redirect_uri", window.location.origin + window.location.pathname);
  return url.toString();
}
