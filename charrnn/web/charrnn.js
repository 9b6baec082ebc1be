// The page: its settings (from the URL, then from the form), the model's step run by
// LiteRT.js on WebAssembly one character at a time, and the text as rnn_play.py prints
// it: the prime as typed, then what the model writes, a character outside its alphabet
// shown as U+FFFD (code 0's character). Sampling is rnn_play.py's - the logits divided
// by the temperature, the top-n likeliest kept, one drawn - with the page's own random
// numbers, so that a seed gives the same text here each time (not rnn_play.py's: with
// topn 1, which draws nothing, the text is rnn_play.py's).
import { Tensor, loadAndCompile, loadLiteRt } from "@litertjs/core";

const PARAMETERS = ["prime", "length", "temperature", "topn", "seed", "stop", "model", "autostart"];
const YIELD_MS = 30; // the loop hands the page back this often: a click on Stop, the text drawn
const MIN_TEMPERATURE = 1e-30; // generate.py's: the logits divided by it stay finite
const MAX_WHOLE = Number.MAX_SAFE_INTEGER; // the whole numbers a link carries exactly
// The longest link the page writes: static hosts and browsers refuse longer addresses
// (a few kB is common; Python's http.server refuses 64 kB), so a reload would fail
const MAX_LINK = 8000;

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------------------
// Settings: the URL's parameters and the form's fields are read by the same checks,
// each bad value one line of the page's message.

function readSettings(values, info) {
  const errors = [];
  const top = info.alphasize;
  const given = (name) => (values[name] ?? "").trim();
  const whole = (name, low, high, must, fallback) => {
    const text = given(name);
    if (text === "") return fallback;
    const n = /^\+?\d+$/.test(text) ? Number(text) : NaN;
    if (n >= low && n <= high) return n;
    errors.push(`${name} must be ${must}, got ${JSON.stringify(values[name])}`);
    return fallback;
  };
  const d = info.defaults;
  const settings = {
    prime: values.prime ? values.prime : "\n", // empty: a line feed, rnn_play.py's default
    length: whole("length", 0, MAX_WHOLE, "a whole number, 0 or more (0: until Stop)", d.length),
    topn: whole("topn", 1, top, `a whole number from 1 to ${top} (${top}: all)`, d.topn),
    seed: whole("seed", 0, MAX_WHOLE, `a whole number from 0 to ${MAX_WHOLE}`, null),
    temperature: d.temperature,
    stop: values.stop ?? "",
    model: given("model") || "float32",
    autostart: given("autostart") === "1",
  };
  const temperature = given("temperature");
  if (temperature !== "") {
    const t = /^\+?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i.test(temperature) ? Number(temperature) : NaN;
    if (t > 0 && Number.isFinite(t)) settings.temperature = t;
    else errors.push(`temperature must be a number above 0, got ${JSON.stringify(temperature)}`);
  }
  const alphabet = new Set(Array.from(info.alphabet)); // U+FFFD too: code 0 is written as it
  if (Array.from(settings.stop).some((c) => !alphabet.has(c))) {
    errors.push(
      `stop ${JSON.stringify(settings.stop)} holds characters that are not in the model's ` +
        "alphabet: it could never be generated",
    );
  }
  if (!Object.hasOwn(info.models, settings.model)) {
    const offered = Object.keys(info.models).join(" or ");
    const int8 = Object.hasOwn(info.models, "int8");
    const why = int8 ? "" : " (this model's int8 file would not be much smaller)";
    errors.push(`model must be ${offered}${why}, got ${JSON.stringify(values.model)}`);
    settings.model = "float32";
  }
  if (!["", "0", "1"].includes(given("autostart"))) {
    errors.push(`autostart must be 1 or 0, got ${JSON.stringify(values.autostart)}`);
  }
  return { settings, errors };
}

function urlValues(search) {
  const params = new URLSearchParams(search);
  const values = {};
  const errors = [];
  for (const [name, value] of params) {
    if (PARAMETERS.includes(name)) values[name] = value;
    else {
      const names = PARAMETERS.join(", ");
      errors.push(`unknown parameter ${JSON.stringify(name)}: the parameters are ${names}`);
    }
  }
  return { values, errors };
}

function field(form, name) {
  // by name alone: form.elements.length is the number of fields, not the length field,
  // and form.elements.namedItem("stop") is the Stop button as well as the stop field
  return form.querySelector(`[name="${name}"]`);
}

function formValues(form) {
  const values = {};
  for (const name of PARAMETERS) {
    const input = field(form, name);
    if (input) values[name] = input.value;
  }
  return values;
}

function shareLink(settings, values) {
  // the settings of the text on the page, its seed included: the link writes it again
  const params = new URLSearchParams();
  if (values.prime) params.set("prime", values.prime);
  for (const name of ["length", "temperature", "topn", "seed"]) {
    params.set(name, String(settings[name]));
  }
  if (settings.stop) params.set("stop", settings.stop);
  if (settings.model !== "float32") params.set("model", settings.model);
  params.set("autostart", "1");
  return `${location.pathname}?${params}`;
}

// ---------------------------------------------------------------------------
// Sampling: rnn_play.py's (generate.sample_logits), with a seeded generator of the page's

function sample(logits, topn, temperature, random) {
  if (topn === 1) return argmax(logits); // draws nothing: rnn_play.py's text exactly
  const t = Math.max(temperature, MIN_TEMPERATURE);
  const codes = topn >= logits.length ? Array.from(logits.keys()) : likeliest(logits, topn);
  let max = -Infinity;
  for (const c of codes) max = Math.max(max, logits[c] / t);
  const weights = codes.map((c) => Math.exp(logits[c] / t - max));
  let u = random() * weights.reduce((a, b) => a + b, 0);
  for (let k = 0; k < codes.length; k++) {
    u -= weights[k];
    if (u < 0) return codes[k];
  }
  return codes[codes.length - 1];
}

function argmax(logits) {
  let best = 0; // the lowest code of the likeliest, as top_k picks among equals
  for (let c = 1; c < logits.length; c++) if (logits[c] > logits[best]) best = c;
  return best;
}

function likeliest(logits, n) {
  const codes = Array.from(logits.keys());
  codes.sort((a, b) => logits[b] - logits[a] || a - b);
  return codes.slice(0, n);
}

function seeded(seed) {
  // sfc32 (Chris Doty-Humphrey's small fast counter), seeded with the seed's 53 bits
  let a = seed >>> 0;
  let b = Math.floor(seed / 2 ** 32) >>> 0;
  let c = 0x9e3779b9;
  let d = 1;
  const next = () => {
    const t = (((a + b) | 0) + d) | 0;
    d = (d + 1) | 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) | 0;
    c = (c << 21) | (c >>> 11);
    c = (c + t) | 0;
    return (t >>> 0) / 2 ** 32;
  };
  for (let i = 0; i < 15; i++) next(); // the seed's bits mixed through the state
  return next;
}

function randomSeed() {
  const [high, low] = crypto.getRandomValues(new Uint32Array(2));
  return (high & 0x1fffff) * 2 ** 32 + low; // 53 bits
}

// ---------------------------------------------------------------------------
// The model: its step, run by LiteRT.js; a state and the logits after the last character

class Writer {
  constructor(info) {
    this.info = info;
    this.alphabet = Array.from(info.alphabet); // code i: its i-th character (astral ones too)
    this.codeOf = new Map(this.alphabet.map((c, i) => [c, i]).slice(1)); // not U+FFFD: unknown
    this.compiled = null;
    this.logits = null; // after the prime and what was written: null, nothing to go on from
  }

  async load(name) {
    const file = this.info.models[name].file;
    // the weights' checksum in the address: a cached step of another export is not reused
    const url = new URL(`${file}?${this.info.index_sha256 ?? ""}`, import.meta.url).href;
    const compiled = await loadAndCompile(url, { accelerator: "wasm" });
    if (this.compiled) this.compiled.delete();
    this.compiled = compiled;
    this.name = name;
    this.logits = null; // another model's state is not this one's to go on from
  }

  start(seed) {
    this.state = new Float32Array(this.info.state_size);
    this.logits = null;
    this.random = seeded(seed);
  }

  encode(text) {
    // CRLF read as LF; a character not in the alphabet is unknown, code 0
    return Array.from(text.replaceAll("\r\n", "\n"), (c) => this.codeOf.get(c) ?? 0);
  }

  async feed(code) {
    const codes = new Tensor(Int32Array.of(code), [1]);
    const state = new Tensor(this.state, [1, this.state.length]);
    let out = null;
    try {
      out = await this.compiled.run({ codes, state });
      this.logits = out.logits.toTypedArray().slice(); // copies: the tensors are freed below
      this.state = out.state.toTypedArray().slice();
    } finally {
      codes.delete();
      state.delete();
      for (const tensor of Object.values(out ?? {})) tensor.delete();
    }
  }
}

// ---------------------------------------------------------------------------
// The page

const ui = {
  form: $("settings"),
  about: $("about"),
  text: $("text"),
  message: $("message"),
  speed: $("speed"),
  link: $("link"),
  generate: $("generate"),
  stop: $("stop"),
  continue: $("continue"),
};
const choice = field(ui.form, "model");
let writer = null;
let job = null; // the generation under way: {stopping}

const channel = new MessageChannel(); // a task at once, where setTimeout may wait 4 ms
function nextTask() {
  return new Promise((resolve) => {
    channel.port1.onmessage = () => resolve();
    channel.port2.postMessage(null);
  });
}

function sizeText(n) {
  // cli.size's: about three digits
  if (n >= 1e6) return `${(n / 1e6).toFixed(n < 1e8 ? 1 : 0)} MB`;
  return `${Math.max(1, Math.round(n / 1e3))} kB`;
}

function showMessages(errors, warnings = []) {
  ui.message.replaceChildren();
  for (const [lines, kind] of [[errors, "error"], [warnings, "warning"]]) {
    for (const line of lines) {
      const p = document.createElement("p");
      p.className = kind;
      p.textContent = line;
      ui.message.append(p);
    }
  }
}

function setState(state) {
  // loading, ready, running, stopped, done (a finite generation ended) or error
  ui.text.dataset.state = state;
  if (state === "done") ui.text.dataset.done = "true";
  else delete ui.text.dataset.done;
  const idle = !["running", "loading", "error"].includes(state);
  ui.generate.disabled = !idle;
  ui.continue.disabled = !idle || writer?.logits == null;
  ui.stop.disabled = state !== "running";
  choice.disabled = !idle;
}

function describe(info, name) {
  const m = info.models[name];
  const step = info.step == null ? "" : ` (step ${info.step.toLocaleString("en")})`;
  const bytes = info.page_bytes + info.json_bytes + info.runtime.bytes + m.bytes;
  let text =
    `Run ${info.run}, ${info.checkpoint}${step}: a ${info.layers} x ${info.cell_size} GRU ` +
    `over ${info.alphasize.toLocaleString("en")} symbols, ` +
    `${info.parameters.toLocaleString("en")} weights, ${name}. It runs in this page with ` +
    `${info.runtime.name} ${info.runtime.version} on WebAssembly; a visit downloads ` +
    `${sizeText(bytes)} (model ${sizeText(m.bytes)}, runtime ${sizeText(info.runtime.bytes)}).`;
  if (m.cost) text += ` ${costText(m.cost)}`;
  const int8 = info.models.int8;
  if (int8 && name !== "int8") {
    text += ` Its int8 model downloads ${sizeText(int8.bytes)} for a loss ${lossText(int8.cost)}.`;
  }
  ui.about.textContent = text;
}

function lossText(cost) {
  const worse = cost.int8_nats - cost.float32_nats;
  return `${worse >= 0 ? "+" : ""}${worse.toFixed(4)} nats/char`;
}

function costText(cost) {
  return (
    `Its int8 weights cost ${lossText(cost)} on ` +
    `${cost.chars.toLocaleString("en")} characters the float32 model wrote ` +
    `(${cost.float32_nats.toFixed(4)} float32, ${cost.int8_nats.toFixed(4)} int8); ` +
    "its text is not the float32 model's."
  );
}

function fillForm(info, values) {
  for (const name of Object.keys(info.models)) {
    const m = info.models[name];
    const note = name === "int8" ? `, loss ${lossText(m.cost)}` : "";
    choice.append(new Option(`${name}, ${sizeText(m.bytes)}${note}`, name));
  }
  const d = info.defaults;
  const fields = { prime: "", length: d.length, temperature: d.temperature, topn: d.topn };
  Object.assign(fields, { seed: "", stop: "", model: "float32" }, values);
  for (const [name, value] of Object.entries(fields)) {
    const input = field(ui.form, name);
    const offered = name !== "model" || Object.hasOwn(info.models, value);
    if (input && offered) input.value = String(value);
  }
}

function unknownWarning(codes) {
  const unknown = codes.filter((c) => c === 0).length;
  if (!unknown) return [];
  return [
    `${unknown.toLocaleString("en")} of the prime's ${codes.length.toLocaleString("en")} ` +
      "characters are not in the model's alphabet: the model reads them as unknown",
  ];
}

// ---------------------------------------------------------------------------
// Generating: Generate starts from the prime, Continue goes on from the state

async function generate(settings) {
  // what was written: settings.length characters, fewer if stopped (null: in the prime)
  writer.start(settings.seed);
  ui.text.replaceChildren(settings.prime); // as typed, as rnn_play.py prints it
  const codes = writer.encode(settings.prime);
  job = { stopping: false };
  setState("running");
  let last = performance.now();
  for (const code of codes) {
    await writer.feed(code);
    if (performance.now() - last >= YIELD_MS) {
      await nextTask();
      last = performance.now();
      if (job.stopping) {
        writer.logits = null; // the prime not all fed: nothing to go on from
        finish("stopped");
        return null;
      }
    }
  }
  return write(settings);
}

async function write(settings) {
  // settings.length characters (0: until Stop), or up to the first stop text written
  job = { stopping: false };
  setState("running");
  const { length, stop } = settings;
  const start = performance.now();
  let made = 0;
  let pending = "";
  let recent = ""; // the end of what was written, for the stop text
  let last = start;
  while (!job.stopping && (length === 0 || made < length)) {
    const code = sample(writer.logits, settings.topn, settings.temperature, writer.random);
    await writer.feed(code); // the state goes on from every character written
    pending += writer.alphabet[code];
    made += 1;
    if (stop) {
      recent = (recent + writer.alphabet[code]).slice(-stop.length);
      if (recent === stop) break;
    }
    const now = performance.now();
    if (now - last >= YIELD_MS) {
      ui.text.append(pending); // a node of its own: appending to one copies all of it
      pending = "";
      showSpeed(made, now - start);
      await nextTask();
      last = performance.now();
    }
  }
  ui.text.append(pending);
  showSpeed(made, performance.now() - start);
  finish(job.stopping ? "stopped" : "done");
  return made;
}

function showSpeed(chars, ms) {
  if (ms <= 0) return;
  const rate = (chars * 1000) / ms;
  ui.speed.dataset.charsPerSecond = rate.toFixed(1);
  const perSecond = Math.round(rate).toLocaleString("en");
  ui.speed.textContent = `${chars.toLocaleString("en")} characters, ${perSecond} chars/s`;
}

function finish(state) {
  // data-finished counts the generations ended, stopped or done: what a test waits for
  job = null;
  ui.text.dataset.finished = String(Number(ui.text.dataset.finished ?? 0) + 1);
  setState(state);
}

function checkedForm(info) {
  const { settings, errors } = readSettings(formValues(ui.form), info);
  showMessages(errors);
  return errors.length ? null : settings;
}

async function onGenerate(event, info) {
  event.preventDefault();
  const settings = checkedForm(info);
  if (settings) await start(info, settings, formValues(ui.form));
}

async function start(info, settings, values) {
  if (job) return;
  settings.seed ??= randomSeed();
  const warnings = showLink(shareLink(settings, values));
  if (settings.model !== writer.name) await switchModel(info, settings.model);
  showMessages([], [...unknownWarning(writer.encode(settings.prime)), ...warnings]);
  const made = await generate(settings);
  if (ui.text.dataset.state === "stopped") {
    // Stop: the link writes what is on the page; none where nothing was written
    showLink(made ? shareLink({ ...settings, length: made }, values) : null);
  }
}

function showLink(link) {
  // the address bar and "link to this text" write the text on the page again; none
  // where they cannot (returns the warning)
  if (link == null || link.length > MAX_LINK) {
    history.replaceState(null, "", location.pathname);
    ui.link.hidden = true;
    return link == null ? [] : ["the prime is too long for a link: no link to this text"];
  }
  history.replaceState(null, "", link);
  ui.link.href = link;
  ui.link.hidden = false;
  return [];
}

async function onContinue(info) {
  const settings = checkedForm(info);
  if (!settings || job || writer.logits == null) return;
  showLink(null); // no link writes a text made in parts
  await write(settings); // the state, the logits and the random numbers go on
}

async function switchModel(info, name) {
  setState("loading");
  await writer.load(name);
  describe(info, name);
  setState("ready");
}

// ---------------------------------------------------------------------------
// Start

function fail(error) {
  const reason = error instanceof Error ? error.message : String(error);
  showMessages([`the page stopped: ${reason.split("\n")[0]}`]);
  job = null;
  setState("error");
}

async function loadInfo() {
  // asked of the server each time: an export written again in its place is a new model
  const response = await fetch(new URL("model.json", import.meta.url), { cache: "no-cache" });
  if (!response.ok) {
    throw new Error(
      `cannot load model.json (HTTP ${response.status}): serve the web/ folder that ` +
        "rnn_export.py wrote",
    );
  }
  const text = await response.text();
  const info = JSON.parse(text);
  info.json_bytes = new TextEncoder().encode(text).length;
  return info;
}

async function main() {
  const info = await loadInfo();
  const url = urlValues(location.search);
  const { settings, errors } = readSettings(url.values, info);
  fillForm(info, url.values);
  const problems = [...url.errors, ...errors];
  showMessages(problems);
  describe(info, settings.model);
  // LiteRT.js's log lines go to the console's verbose level, not as errors
  globalThis.Module = { print: console.debug, printErr: console.debug };
  await loadLiteRt(new URL("litertjs/wasm/", import.meta.url).href);
  writer = new Writer(info);
  await switchModel(info, settings.model);
  ui.form.addEventListener("submit", (e) => onGenerate(e, info).catch(fail));
  ui.stop.addEventListener("click", () => job && (job.stopping = true));
  ui.continue.addEventListener("click", () => onContinue(info).catch(fail));
  choice.addEventListener("change", () => switchModel(info, choice.value).catch(fail));
  // the URL's settings as they are (a form's text field would turn a lone CR into LF)
  if (settings.autostart && !problems.length) await start(info, settings, url.values);
}

window.addEventListener("unhandledrejection", (event) => {
  event.preventDefault(); // a message on the page, not an exception in the console
  fail(event.reason);
});
main().catch(fail);
