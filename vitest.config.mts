import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // Pulumi's mocks are process-global: each test file gets a process of its own.
    pool: "forks",
    testTimeout: 30_000,
  },
});
