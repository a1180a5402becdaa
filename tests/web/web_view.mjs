// Drives the web view in headless Chromium (Debian's /usr/bin/chromium)
// through playwright-core, for tests/web_view.rs:
//   SIPFENCE_URL=http://127.0.0.1:PORT/ SIPFENCE_TOKEN=... SIPFENCE_BANNED=127.0.0.9 \
//   SIPFENCE_SCREENSHOT=/tmp/web-view.png node web_view.mjs
// Loads the page, enters the token, sees the ban, presses its Unban button,
// sees the ban gone; saves a screenshot with the ban (and one after, -after.png).
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const url = process.env.SIPFENCE_URL;
const token = process.env.SIPFENCE_TOKEN;
const banned = process.env.SIPFENCE_BANNED;
const screenshot = process.env.SIPFENCE_SCREENSHOT;
if (!url || !token || !banned || !screenshot) {
  console.error("SIPFENCE_URL, SIPFENCE_TOKEN, SIPFENCE_BANNED and SIPFENCE_SCREENSHOT are needed");
  process.exit(2);
}

const profile = mkdtempSync(join(tmpdir(), "sipfence-chromium-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
  viewport: { width: 1200, height: 900 },
});
try {
  const page = await context.newPage();
  page.on("console", (m) => console.log("page:", m.text()));
  await page.goto(url);
  await page.fill("#token", token);
  await page.click("#save");
  const row = page.locator(`#bans tr[data-address="${banned}"]`);
  await row.waitFor({ state: "visible", timeout: 15000 });
  const text = await row.innerText();
  if (!text.includes("fail-to-ban")) throw new Error("ban row without its evidence: " + text);
  console.log("ban shown:", text.replace(/\s+/g, " "));
  await page.screenshot({ path: screenshot, fullPage: true });
  await row.locator("button.unban").click();
  await row.waitFor({ state: "detached", timeout: 15000 });
  // Still gone after the next refresh (it comes from the API, not the page).
  await page.waitForTimeout(3500);
  if ((await row.count()) !== 0) throw new Error("the ban came back");
  console.log("ban gone");
  await page.screenshot({ path: screenshot.replace(/\.png$/, "-after.png"), fullPage: true });
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
console.log("ok");
