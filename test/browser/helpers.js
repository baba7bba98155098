'use strict';
// Shared helpers for the browser suites: headless Debian Chromium through
// playwright-core, a fresh profile per browser, screenshots to test/artifacts/.

const fs = require('node:fs');
const path = require('node:path');
const { chromium } = require('playwright-core');
const { ARTIFACTS_DIR } = require('../lib/harness');

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

/**
 * Launch Chromium with a fresh user-data-dir. Returns {browser, newPage(opts), close()}.
 * Each newPage() is a separate browser context (own sessionStorage, cookies, sockets).
 * Console messages and page errors are collected on page.__logs for failure reports.
 */
async function launch() {
  // chromium.launch() always starts from a fresh temporary profile (it passes its own
  // --user-data-dir and deletes it on close; it refuses one in args), and every
  // browser context is a separate incognito-like profile on top of that.
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ARGS });
  const contexts = [];
  return {
    browser,
    async newPage(opts = {}) {
      const ctx = await browser.newContext({ viewport: { width: 1280, height: 860 }, ...opts });
      contexts.push(ctx);
      const page = await ctx.newPage();
      page.__logs = [];
      page.on('console', (m) => page.__logs.push(`[${m.type()}] ${m.text()}`));
      page.on('pageerror', (e) => page.__logs.push(`[pageerror] ${e.message}`));
      return page;
    },
    async close() {
      for (const c of contexts) await c.close().catch(() => {});
      await browser.close().catch(() => {});
    },
  };
}

/** Save a full-page PNG to test/artifacts/<name>.png; returns the path. */
async function screenshot(page, name) {
  fs.mkdirSync(ARTIFACTS_DIR, { recursive: true });
  const file = path.join(ARTIFACTS_DIR, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

module.exports = { launch, screenshot, CHROMIUM };
