import { expect, test } from "bun:test";
import { BadForwardedFor, clientAddress } from "./client-address.ts";

test("with 0 trusted hops the socket's address is used and X-Forwarded-For is ignored", () => {
  expect(clientAddress("10.0.0.7", "1.2.3.4", 0)).toBe("10.0.0.7");
  expect(clientAddress("10.0.0.7", "garbage", 0)).toBe("10.0.0.7");
  expect(clientAddress("10.0.0.7", null, 0)).toBe("10.0.0.7");
});

test("N trusted hops take the N-th address from the right; what the client wrote further left is ignored", () => {
  // client 203.0.113.9 -> proxy (appends it) -> gateway sees the proxy 10.0.0.1 as peer
  expect(clientAddress("10.0.0.1", "203.0.113.9", 1)).toBe("203.0.113.9");
  expect(clientAddress("10.0.0.1", "6.6.6.6, 203.0.113.9", 1)).toBe("203.0.113.9");
  expect(clientAddress("10.0.0.1", "spoofed-garbage, 203.0.113.9", 1)).toBe("203.0.113.9");
  // two proxies: the outer one appended the client, the inner one the outer proxy
  expect(clientAddress("10.0.0.2", "6.6.6.6, 203.0.113.9, 10.0.0.1", 2)).toBe("203.0.113.9");
});

test("fewer entries than trusted hops: the leftmost that a trusted proxy wrote, or the peer", () => {
  expect(clientAddress("10.0.0.1", null, 1)).toBe("10.0.0.1");
  expect(clientAddress("10.0.0.1", "", 1)).toBe("10.0.0.1");
  expect(clientAddress("10.0.0.2", "203.0.113.9", 2)).toBe("203.0.113.9");
});

test("a malformed trusted entry is refused", () => {
  for (const xff of ["not-an-ip", "1.2.3", "999.1.1.1", "1.2.3.4:80", "1.2.3.4 5.6.7.8", "<script>"]) {
    expect(() => clientAddress("10.0.0.1", xff, 1)).toThrow(BadForwardedFor);
  }
});

test("IPv6: mapped IPv4 counts as IPv4; other addresses count by their /64", () => {
  expect(clientAddress("::ffff:192.0.2.5", null, 0)).toBe("192.0.2.5");
  expect(clientAddress("2001:db8:1:2::1", null, 0)).toBe("2001:db8:1:2::/64");
  expect(clientAddress("2001:0db8:0001:0002:ffff:0:0:9", null, 0)).toBe("2001:db8:1:2::/64");
  expect(clientAddress("10.0.0.1", "[2001:db8::5]", 1)).toBe("2001:db8:0:0::/64");
  expect(clientAddress("::1", null, 0)).toBe("0:0:0:0::/64");
});
