import { zValidator } from "@hono/zod-validator";
import type { Context } from "hono";
import type { z } from "zod";
import { describeIssues } from "../../shared/protocol.ts";

/** Request validators answering 400 `{"error"}` naming what is wrong. */
const validationHook = (result: { success: boolean; error?: unknown }, c: Context) => {
  if (!result.success) return c.json({ error: describeIssues(result.error as z.ZodError) }, 400);
};
export const json = <T extends z.ZodType>(schema: T) => zValidator("json", schema, validationHook);
export const query = <T extends z.ZodType>(schema: T) => zValidator("query", schema, validationHook);
