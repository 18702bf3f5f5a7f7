import type { MiddlewareHandler } from "hono";
import { cors } from "hono/cors";

/**
 * The browser client runs only its own scripts from /client/ (no inline script, no eval), talks
 * only to its own origin, and may not be framed. `style-src-attr 'unsafe-inline'` admits style
 * attributes (the client sets a hue per avatar); style elements still come from /client/ only.
 */
export const CONTENT_SECURITY_POLICY = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "style-src-attr 'unsafe-inline'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join("; ");

const SECURITY_HEADERS: Record<string, string> = {
  "content-security-policy": CONTENT_SECURITY_POLICY,
  "x-content-type-options": "nosniff",
  "x-frame-options": "DENY",
  "referrer-policy": "no-referrer",
  "cross-origin-opener-policy": "same-origin",
  "cross-origin-resource-policy": "same-origin",
};

/** Sets the security headers on every answer (errors and 404s included); /api answers are never cached. */
export function securityHeaders(): MiddlewareHandler {
  return async (c, next) => {
    await next();
    for (const [k, v] of Object.entries(SECURITY_HEADERS)) c.res.headers.set(k, v);
    if (c.req.path.startsWith("/api/")) c.res.headers.set("cache-control", "no-store");
  };
}

/** CORS for /api: closed (no Access-Control-* headers at all) unless origins are configured. */
export function apiCors(origins: string[]): MiddlewareHandler | null {
  if (origins.length === 0) return null;
  // The cross-origin answers must be readable by the listed origins only.
  return cors({
    origin: (o) => (origins.includes(o) ? o : null),
    allowMethods: ["GET", "POST", "PATCH", "DELETE"],
    allowHeaders: ["authorization", "content-type"],
    exposeHeaders: ["retry-after"],
    maxAge: 600,
  });
}
