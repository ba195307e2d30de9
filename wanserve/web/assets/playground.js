// wanserve playground: the public API from a browser, with no build step and no dependencies.
//
// The API key lives in this tab's sessionStorage and travels only in the Authorization header
// (never in a URL, so it reaches no log, history or Referer). Live progress comes from the
// task's event stream (GET /api/v1/tasks/{id}/events), read with fetch() because EventSource
// cannot send a header; a server without that route is polled every 2 s instead.

const KEY_STORAGE = "wanserve.apiKey";
const POLL_MS = 2000;
const STREAM_RETRIES = 3;
const TERMINAL = new Set(["SUCCEEDED", "FAILED", "CANCELED", "UNKNOWN"]);
const STAGES = {
  queued: "Queued",
  loading: "Loading the model",
  denoising: "Denoising",
  decoding: "Decoding",
  encoding: "Encoding",
};

const $ = (id) => document.getElementById(id);
const el = {
  keyForm: $("key-form"),
  key: $("api-key"),
  keyState: $("key-state"),
  forget: $("forget-key"),
  form: $("create-form"),
  fields: $("create-fields"),
  model: $("model"),
  summary: $("model-summary"),
  prompt: $("prompt"),
  promptCount: $("prompt-count"),
  negative: $("negative-prompt"),
  negativeField: $("negative-field"),
  func: $("function"),
  funcField: $("function-field"),
  funcHint: $("function-hint"),
  mediaFields: $("media-fields"),
  mediaHint: $("media-hint"),
  rolesField: $("roles-field"),
  roles: $("roles"),
  editOptions: $("edit-options"),
  control: $("control-condition"),
  strength: $("strength"),
  maskType: $("mask-type"),
  expandRatio: $("expand-ratio"),
  maskFrame: $("mask-frame-id"),
  ratio: $("ratio"),
  ratioField: $("ratio-field"),
  size: $("size"),
  resolution: $("resolution"),
  duration: $("duration"),
  seed: $("seed"),
  promptExtend: $("prompt-extend"),
  shotType: $("shot-type"),
  generateAudio: $("generate-audio"),
  watermark: $("watermark"),
  submit: $("submit"),
  taskLine: $("task-line"),
  progress: $("progress"),
  percent: $("percent"),
  status: $("status"),
  error: $("error"),
  player: $("player"),
  video: $("video"),
  download: $("download"),
  cancel: $("cancel"),
  tasks: $("tasks"),
  tasksEmpty: $("tasks-empty"),
  refresh: $("refresh-tasks"),
};
const FILES = {
  img_url: $("image"),
  first_frame_url: $("first-frame"),
  last_frame_url: $("last-frame"),
  audio_url: $("audio"),
};
// The inputs of the `media[]`, reference and editing (VACE) models, one file field per kind,
// in the order they are sent. Files are sent inline, as base64 data: URIs.
const MEDIA_KINDS = [
  "first_frame",
  "last_frame",
  "first_clip",
  "last_clip",
  "video",
  "mask_image",
  "mask_video",
  "driving_audio",
  "reference_image",
  "reference_video",
  "reference_audio",
];
const MEDIA = Object.fromEntries(
  MEDIA_KINDS.map((kind) => [kind, $(`media-${kind.replaceAll("_", "-")}`)]),
);
const MEDIA_NAMES = {
  first_frame: "first frame",
  last_frame: "last frame",
  first_clip: "first clip",
  last_clip: "last clip",
  video: "source video",
  mask_image: "mask image",
  mask_video: "mask video",
  driving_audio: "sound track",
  reference_image: "reference images",
  reference_video: "reference videos",
  reference_audio: "reference audio",
};
// An editing model's flat input field for each kind (ref_images_url is a list).
const EDIT_FIELDS = {
  reference_image: "ref_images_url",
  video: "video_url",
  mask_image: "mask_image_url",
  mask_video: "mask_video_url",
  first_frame: "first_frame_url",
  last_frame: "last_frame_url",
  first_clip: "first_clip_url",
  last_clip: "last_clip_url",
};
// What each VACE function reads (wanserve/editing.py): the kinds and how many of each.
const FUNCTIONS = {
  image_reference: {
    name: "Image reference",
    hint: "A video of the subjects (and at most one background) in the reference images.",
    takes: { reference_image: 3 },
  },
  video_repainting: {
    name: "Video repainting",
    hint: "A new video that keeps the source video's motion, drawn as the prompt says.",
    takes: { video: 1, reference_image: 1 },
  },
  video_edit: {
    name: "Video edit",
    hint: "Redraws the masked area of the source video (white in the mask) as the prompt says.",
    takes: { video: 1, mask_image: 1, mask_video: 1, reference_image: 1 },
  },
  video_extension: {
    name: "Video extension",
    hint: "A video that continues from, or leads into, the frames and clips given (one or more).",
    takes: { first_clip: 1, first_frame: 1, last_frame: 1, last_clip: 1 },
  },
  video_outpainting: {
    name: "Video outpainting",
    hint: "The source video in a larger frame: each side grown by its scale.",
    takes: { video: 1 },
  },
};
const SCALES = ["top", "bottom", "left", "right"];
const TYPES = { ".mp4": "video/mp4", ".mov": "video/quicktime", ".wav": "audio/wav", ".mp3": "audio/mpeg" };

let apiKey = sessionStorage.getItem(KEY_STORAGE) || "";
let catalogue = null; // the body of GET /api/v1/models
let watching = null; // {taskId, controller} of the task shown in the result panel
const roleChoices = new Map(); // reference image (index, name, size) -> "obj" | "bg"

// -- HTTP ------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(code, message) {
    super(`${code}: ${message}`);
    this.code = code;
  }
}

function apiUrl(path) {
  // Relative to the page, so a server mounted under a path prefix works too.
  return new URL(path, document.baseURI).toString();
}

function authorized(headers = {}) {
  return { Authorization: `Bearer ${apiKey}`, ...headers };
}

async function readBody(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) {
    const code = body && body.code ? body.code : `HTTP ${response.status}`;
    const message = body && body.message ? body.message : response.statusText || "request failed";
    throw new ApiError(code, message);
  }
  return body;
}

async function call(path, { method = "GET", headers = {}, body, signal } = {}) {
  const response = await fetch(apiUrl(path), {
    method,
    body,
    signal,
    headers: authorized(headers),
    credentials: "omit",
    cache: "no-store",
  });
  return readBody(response);
}

// -- Status display ----------------------------------------------------------------------------

function say(text) {
  // Only changes are announced: an aria-live region re-reads whatever is written to it.
  if (el.status.textContent !== text) el.status.textContent = text;
}

function showError(error) {
  if (!error) {
    el.error.hidden = true;
    el.error.textContent = "";
    return;
  }
  el.error.textContent = error instanceof ApiError ? error.message : `Error: ${error.message || error}`;
  el.error.hidden = false;
}

function setProgress(value) {
  const percent = Math.max(0, Math.min(100, Math.round(value)));
  el.progress.value = percent;
  el.percent.textContent = `${percent}%`;
}

function describeStatus(status, queuePosition) {
  if (status === "PENDING") {
    if (queuePosition === 0) return "Queued: next to run.";
    if (Number.isInteger(queuePosition)) {
      return `Queued: ${queuePosition} task${queuePosition === 1 ? "" : "s"} ahead.`;
    }
    return "Queued.";
  }
  if (status === "RUNNING") return "Running.";
  return `${status[0]}${status.slice(1).toLowerCase()}.`;
}

function describeProgress(stage, step, total, percent) {
  const name = STAGES[stage] || "Running";
  const steps = Number.isInteger(step) && Number.isInteger(total) && total > 0
    ? `: step ${step} of ${total}`
    : "";
  return `${name}${steps} (${percent}%).`;
}

// -- The key ------------------------------------------------------------------------------------

async function useKey(key) {
  apiKey = key;
  el.keyState.textContent = "Checking the key…";
  try {
    catalogue = await call("api/v1/models");
  } catch (error) {
    catalogue = null;
    apiKey = "";
    sessionStorage.removeItem(KEY_STORAGE);
    el.fields.disabled = true;
    el.refresh.disabled = true;
    el.keyState.textContent = "";
    showError(error);
    say("Enter a valid API key to start.");
    return;
  }
  sessionStorage.setItem(KEY_STORAGE, key);
  el.key.value = "";
  el.key.placeholder = "key in use (enter another to switch)";
  el.keyState.textContent = `Key accepted: ${catalogue.models.length} models available.`;
  showError(null);
  fillModels();
  el.fields.disabled = false;
  el.refresh.disabled = false;
  say("Ready.");
  await refreshTasks();
}

function forgetKey() {
  apiKey = "";
  catalogue = null;
  sessionStorage.removeItem(KEY_STORAGE);
  stopWatching();
  el.key.value = "";
  el.key.placeholder = "";
  el.fields.disabled = true;
  el.refresh.disabled = true;
  el.keyState.textContent = "Key forgotten.";
  el.tasks.replaceChildren();
  el.tasksEmpty.hidden = false;
  say("Enter an API key to start.");
}

// -- The form adapts to the model ---------------------------------------------------------------

const KIND_NAMES = {
  t2v: "text to video",
  i2v: "image to video",
  kf2v: "first and last frame to video",
  vace: "references and editing",
};

function option(value, text, selected = false) {
  const node = document.createElement("option");
  node.value = String(value);
  node.textContent = text;
  node.selected = selected;
  return node;
}

function currentModel() {
  return catalogue ? catalogue.models.find((m) => m.model === el.model.value) : undefined;
}

function fillModels() {
  const previous = el.model.value;
  const groups = new Map();
  for (const model of catalogue.models) {
    if (!groups.has(model.kind)) {
      const group = document.createElement("optgroup");
      group.label = KIND_NAMES[model.kind] || model.kind;
      groups.set(model.kind, group);
    }
    groups.get(model.kind).append(option(model.model, model.model));
  }
  // The known kinds in this order, then any other the server lists.
  const order = [...new Set([...Object.keys(KIND_NAMES), ...groups.keys()])];
  el.model.replaceChildren(...order.filter((k) => groups.has(k)).map((k) => groups.get(k)));
  const names = catalogue.models.map((m) => m.model);
  el.model.value = names.includes(previous) ? previous : names.includes("wan2.1-t2v-turbo") ? "wan2.1-t2v-turbo" : names[0];
  adaptForm();
}

function adaptForm() {
  const model = currentModel();
  if (!model) return;
  const audio = model.audio ? ", sound" : "";
  el.summary.textContent =
    `${KIND_NAMES[model.kind] || model.kind}, ${model.fps} fps, ${model.steps} steps${audio}; ` +
    `prompts up to ${model.prompt_limit} characters.`;

  for (const [field, input] of Object.entries(FILES)) {
    const wrapper = input.closest(".field");
    // An editing model names first_frame_url and last_frame_url too: its own fields take them.
    const used = !isEditing(model) && model.inputs.includes(field);
    wrapper.hidden = !used;
    input.disabled = !used;
  }

  for (const wrapper of document.querySelectorAll("[data-sized-by]")) {
    const used = wrapper.dataset.sizedBy === model.sized_by;
    wrapper.hidden = !used;
    wrapper.querySelector("select").disabled = !used;
  }
  if (model.sized_by === "size") {
    el.size.replaceChildren(
      ...model.resolutions.map((tier) => {
        const group = document.createElement("optgroup");
        group.label = tier.resolution;
        group.append(...tier.sizes.map((s) => option(s, s.replace("*", " × "), s === model.default_size)));
        return group;
      }),
    );
  } else {
    el.resolution.replaceChildren(
      ...model.resolutions.map((tier) =>
        option(tier.resolution, tier.resolution, tier.resolution === model.default_resolution),
      ),
    );
  }
  el.duration.replaceChildren(
    ...model.durations.map((d) => option(d, durationName(d), d === model.default_duration)),
    ...(model.auto_duration ? [option(-1, "Auto (-1)")] : []),
  );
  el.duration.disabled = model.durations.length === 1 && !model.auto_duration;
  const ratios = model.ratios || [];
  el.ratioField.hidden = !ratios.length;
  el.ratio.disabled = !ratios.length;
  el.ratio.replaceChildren(
    ...ratios.map((r) =>
      option(r, r === "adaptive" ? "Adaptive (the input's, else 16:9)" : r, r === "adaptive"),
    ),
  );
  el.seed.max = String(model.seed_max);

  const features = catalogue.features;
  showFeature("prompt_extension", features.prompt_extension);
  showFeature("multi_shot", model.shot_types.includes("multi"));
  showFeature("dubbing", model.dubbing);
  const negative = model.inputs.includes("negative_prompt");
  el.negativeField.hidden = !negative;
  el.negative.disabled = !negative;

  const editing = isEditing(model);
  el.funcField.hidden = !editing;
  el.func.disabled = !editing;
  if (editing) {
    const previous = el.func.value;
    el.func.replaceChildren(...model.functions.map((f) => option(f, FUNCTIONS[f] ? FUNCTIONS[f].name : f)));
    if (model.functions.includes(previous)) el.func.value = previous;
  } else {
    el.func.replaceChildren();
  }
  adaptMedia();

  el.prompt.required = model.prompt_required;
  el.prompt.placeholder = model.prompt_required
    ? "Describe the video"
    : "Optional: describe the motion";
  countPrompt();
}

function durationName(seconds) {
  // 0: as long as the source video (a video-editing model).
  return seconds === 0 ? "The source's length (0)" : `${seconds} seconds`;
}

function isEditing(model) {
  return (model.functions || []).length > 0;
}

function takesMedia(model) {
  return model.inputs.includes("media") || model.inputs.includes("reference_urls");
}

// The file fields the chosen model (and function) takes: kind -> how many files.
function mediaLimits(model) {
  const media = model.media || {};
  const limits = {};
  if (isEditing(model)) {
    const fn = FUNCTIONS[el.func.value];
    for (const [kind, most] of Object.entries(fn ? fn.takes : {})) {
      if (media[kind]) limits[kind] = Math.min(most, media[kind]);
    }
  } else if (takesMedia(model)) {
    // Only the kinds some route serves: the others are refused on this server.
    const served = new Set(model.routes.flatMap((r) => [...r.requires, ...r.accepts]));
    for (const [kind, most] of Object.entries(media)) {
      if (served.has(kind) && kind in MEDIA) limits[kind] = most;
    }
  }
  return limits;
}

function mediaName(kind) {
  return MEDIA_NAMES[kind] || kind.replaceAll("_", " ");
}

function describeRoutes(model) {
  return model.routes
    .map((route) => {
      const need = route.requires.map(mediaName).join(" + ") || "no file (text only)";
      return route.accepts.length ? `${need} (optional: ${route.accepts.map(mediaName).join(", ")})` : need;
    })
    .join("; or ");
}

function describeCount(kind, most, model, fn) {
  if (fn === "image_reference" && kind === "reference_image") {
    return `1 to ${most} images; at most one may be the background.`;
  }
  if (fn && kind === "reference_image") return "Optional: one image of the subject.";
  if (most < 2) return "";
  let text = `Up to ${most}.`;
  if (model.media_total && kind.startsWith("reference_") && kind !== "reference_audio") {
    text = `Up to ${most} (${model.media_total} reference images and videos in all).`;
  }
  if (model.inputs.includes("reference_urls")) text += " Call them character1, character2, … in the prompt.";
  return text;
}

function adaptMedia() {
  const model = currentModel();
  if (!model) return;
  const limits = mediaLimits(model);
  const fn = isEditing(model) ? el.func.value : null;
  for (const [kind, input] of Object.entries(MEDIA)) {
    const most = limits[kind] || 0;
    input.closest(".field").hidden = !most;
    input.disabled = !most;
    input.multiple = most > 1;
    const count = $(`${input.id}-count`);
    count.textContent = most ? describeCount(kind, most, model, fn) : "";
    count.hidden = !count.textContent;
  }
  el.mediaFields.hidden = Object.keys(limits).length === 0;
  el.mediaHint.textContent = takesMedia(model) && !fn ? `Takes ${describeRoutes(model)}.` : "";
  el.mediaHint.hidden = !el.mediaHint.textContent;
  el.funcHint.textContent = fn && FUNCTIONS[fn] ? FUNCTIONS[fn].hint : "";
  el.editOptions.hidden = !fn;
  for (const wrapper of document.querySelectorAll("[data-functions]")) {
    const used = fn !== null && wrapper.dataset.functions.split(" ").includes(fn);
    wrapper.hidden = !used;
    for (const input of wrapper.querySelectorAll("input, select")) input.disabled = !used;
  }
  renderRoles();
}

// image_reference: a subject (obj) or background (bg) select per reference image.
function renderRoles() {
  const model = currentModel();
  const input = MEDIA.reference_image;
  const used = Boolean(model) && isEditing(model) && el.func.value === "image_reference" &&
    !input.disabled && input.files.length > 0;
  el.rolesField.hidden = !used;
  if (!used) {
    el.roles.replaceChildren();
    return;
  }
  el.roles.replaceChildren(
    ...[...input.files].map((file, i) => {
      const item = document.createElement("li");
      const label = document.createElement("label");
      label.htmlFor = `role-${i}`;
      label.textContent = `Image ${i + 1}: ${file.name}`;
      const select = document.createElement("select");
      select.id = `role-${i}`;
      select.dataset.file = `${i}:${file.name}:${file.size}`;
      select.append(option("obj", "Subject (obj)"), option("bg", "Background (bg)"));
      select.value = roleChoices.get(select.dataset.file) || "obj";
      select.addEventListener("change", () => roleChoices.set(select.dataset.file, select.value));
      item.append(label, select);
      return item;
    }),
  );
}

function showFeature(name, available) {
  for (const wrapper of document.querySelectorAll(`[data-feature="${name}"]`)) {
    wrapper.hidden = !available;
    for (const input of wrapper.querySelectorAll("input, select")) input.disabled = !available;
  }
}

function countPrompt() {
  const model = currentModel();
  if (!model) return;
  const length = [...el.prompt.value].length;
  el.promptCount.textContent = length > model.prompt_limit
    ? `${length} / ${model.prompt_limit}: the text past the limit will be ignored`
    : `${length} / ${model.prompt_limit}`;
  el.promptCount.classList.toggle("over", length > model.prompt_limit);
}

// -- Uploads: the SDK's flow ---------------------------------------------------------------------

function safeName(name) {
  // The server takes names without control characters, backslashes, slashes or a leading dot,
  // at most 255 bytes; keep the extension, which tells the worker the file's type.
  let clean = name.replace(/[\u0000-\u001f\u007f\\/]/g, "_").replace(/^\.+/, "");
  const dot = clean.lastIndexOf(".");
  const ext = dot > 0 ? clean.slice(dot, dot + 10) : "";
  const stem = (dot > 0 ? clean.slice(0, dot) : clean).slice(0, 80);
  clean = `${stem}${ext}`;
  return clean && !clean.startsWith(".") ? clean : `upload${ext}`;
}

async function upload(file, model) {
  const query = new URLSearchParams({ action: "getPolicy", model });
  const { data: policy } = await call(`api/v1/uploads?${query}`);
  if (file.size > policy.max_file_size_mb * 1024 * 1024) {
    throw new ApiError("BadRequest.TooLarge", `${file.name} is larger than ${policy.max_file_size_mb} MB.`);
  }
  const name = safeName(file.name);
  const key = `${policy.upload_dir}/${name}`;
  const form = new FormData();
  form.append("OSSAccessKeyId", policy.oss_access_key_id);
  form.append("Signature", policy.signature);
  form.append("policy", policy.policy);
  form.append("key", key);
  form.append("x-oss-object-acl", policy.x_oss_object_acl);
  form.append("x-oss-forbid-overwrite", policy.x_oss_forbid_overwrite);
  form.append("success_action_status", "200");
  form.append("x-oss-content-type", file.type || "application/octet-stream");
  form.append("file", file, name);
  // No API key here: the signed policy is what authorises the upload.
  const response = await fetch(policy.upload_host, { method: "POST", body: form, credentials: "omit" });
  if (!response.ok) await readBody(response);
  return `oss://${key}`;
}

// -- Inline inputs: data: URIs ---------------------------------------------------------------------

function dataUri(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => {
      let uri = String(reader.result);
      if (!file.type) {
        // A file the browser cannot type (a dropped .mov, say): name it by its extension.
        const dot = file.name.lastIndexOf(".");
        const type = dot > 0 ? TYPES[file.name.slice(dot).toLowerCase()] : undefined;
        if (type) uri = uri.replace(/^data:[^;,]*/, `data:${type}`);
      }
      resolve(uri);
    };
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

class FormError extends ApiError {
  constructor(message, field) {
    super("InvalidParameter", message);
    this.field = field;
  }
}

function fieldName(input) {
  const label = document.querySelector(`label[for="${input.id}"]`);
  return label.firstChild.textContent.trim();
}

// The files to send, in a stable order ([{kind, file}]); a FormError if they cannot be served.
function chosenMedia(model) {
  const limits = mediaLimits(model);
  const chosen = [];
  const present = new Set();
  let references = 0;
  for (const kind of MEDIA_KINDS) {
    const most = limits[kind];
    const input = MEDIA[kind];
    if (!most || !input.files.length) continue;
    if (input.files.length > most) {
      throw new FormError(`${fieldName(input)}: choose at most ${most}.`, input);
    }
    present.add(kind);
    if (kind === "reference_image" || kind === "reference_video") references += input.files.length;
    for (const file of input.files) chosen.push({ kind, file });
  }
  if (model.media_total && references > model.media_total) {
    throw new FormError(
      `At most ${model.media_total} reference images and videos together.`,
      MEDIA.reference_image,
    );
  }
  if (isEditing(model)) {
    checkFunction(el.func.value, present);
  } else if (takesMedia(model)) {
    // A route serves the mix sent: all the kinds it requires, and none it does not take.
    const served = model.routes.some(
      (r) => r.requires.every((k) => present.has(k)) &&
        [...present].every((k) => r.requires.includes(k) || r.accepts.includes(k)),
    );
    if (!served) {
      const first = Object.keys(limits).map((k) => MEDIA[k])[0];
      throw new FormError(`${model.model} takes ${describeRoutes(model)}.`, first);
    }
  }
  return chosen;
}

// The inputs each editing function needs (wanserve/editing.py).
function checkFunction(fn, present) {
  if (fn === "image_reference") {
    if (!present.has("reference_image")) {
      throw new FormError("Reference images: choose 1 to 3 images.", MEDIA.reference_image);
    }
    const roles = [...el.roles.querySelectorAll("select")];
    if (roles.filter((s) => s.value === "bg").length > 1) {
      throw new FormError("At most one reference image may be the background.", roles[0]);
    }
  } else if (fn === "video_extension") {
    if (!["first_clip", "first_frame", "last_frame", "last_clip"].some((k) => present.has(k))) {
      throw new FormError("Choose a first clip, a first frame, a last frame or a last clip.", MEDIA.first_clip);
    }
  } else if (!present.has("video")) {
    throw new FormError("Source video: choose a video.", MEDIA.video);
  } else if (fn === "video_edit") {
    if (!present.has("mask_image") && !present.has("mask_video")) {
      throw new FormError("Mask image: choose a mask image or a mask video.", MEDIA.mask_image);
    }
    if (present.has("mask_image") && present.has("mask_video")) {
      throw new FormError("Choose a mask image or a mask video, not both.", MEDIA.mask_video);
    }
  }
}

function numberIn(input, low, high, { whole = false } = {}) {
  const value = input.value === "" ? NaN : Number(input.value);
  if (!Number.isFinite(value) || value < low || value > high || (whole && !Number.isInteger(value))) {
    const what = whole ? "a whole number" : "a number";
    throw new FormError(`${fieldName(input)}: enter ${what} from ${low} to ${high}.`, input);
  }
  return value;
}

// The parameters of an editing function.
function editParameters(fn) {
  if (fn === "image_reference") {
    return { obj_or_bg: [...el.roles.querySelectorAll("select")].map((s) => s.value) };
  }
  if (fn === "video_repainting") {
    return { control_condition: el.control.value, strength: numberIn(el.strength, 0, 1) };
  }
  if (fn === "video_edit") {
    const parameters = { mask_type: el.maskType.value, expand_ratio: numberIn(el.expandRatio, 0, 1) };
    if (MEDIA.mask_image.files.length) {
      parameters.mask_frame_id = numberIn(el.maskFrame, 1, 10000, { whole: true });
    }
    return parameters;
  }
  if (fn === "video_outpainting") {
    return Object.fromEntries(SCALES.map((side) => [`${side}_scale`, numberIn($(`${side}-scale`), 1, 2)]));
  }
  return {};
}

// -- Create ------------------------------------------------------------------------------------

async function submit(event) {
  event.preventDefault();
  const model = currentModel();
  if (!model) return;
  showError(null);
  const prompt = el.prompt.value.trim();
  if (model.prompt_required && !prompt) {
    showError(new ApiError("InvalidParameter", "Enter a prompt."));
    el.prompt.focus();
    return;
  }
  const input = {};
  if (prompt) input.prompt = prompt;
  if (!el.negative.disabled && el.negative.value.trim()) input.negative_prompt = el.negative.value.trim();
  const parameters = { duration: Number(el.duration.value) };
  if (model.sized_by === "size") parameters.size = el.size.value;
  else parameters.resolution = el.resolution.value;
  if (el.seed.value !== "") {
    const seed = Number(el.seed.value);
    if (!Number.isInteger(seed) || seed < 0 || seed > model.seed_max) {
      showError(new ApiError("InvalidParameter", `The seed must be a whole number from 0 to ${model.seed_max}.`));
      el.seed.focus();
      return;
    }
    parameters.seed = seed;
  }
  parameters.prompt_extend = catalogue.features.prompt_extension && el.promptExtend.checked;
  parameters.watermark = el.watermark.checked;
  if (model.shot_types.includes("multi")) parameters.shot_type = el.shotType.value;
  if (model.dubbing) parameters.audio = el.generateAudio.checked;
  if ((model.ratios || []).length) parameters.ratio = el.ratio.value;

  let media;
  try {
    media = chosenMedia(model);
    if (isEditing(model)) Object.assign(parameters, editParameters(el.func.value));
  } catch (error) {
    if (!(error instanceof FormError)) throw error;
    showError(error);
    if (error.field) error.field.focus();
    return;
  }

  const wanted = isEditing(model) ? [] : model.inputs.filter((f) => f in FILES);
  for (const field of wanted) {
    if (field !== "audio_url" && !FILES[field].files.length) {
      const label = document.querySelector(`label[for="${FILES[field].id}"]`);
      showError(new ApiError("InvalidParameter", `${label.firstChild.textContent.trim()}: choose an image.`));
      FILES[field].focus();
      return;
    }
  }

  el.submit.disabled = true;
  stopWatching();
  try {
    let uploaded = false;
    for (const field of wanted) {
      const file = FILES[field].files[0];
      if (!file) continue;
      say(`Uploading ${file.name}…`);
      input[field] = await upload(file, model.model);
      uploaded = true;
    }
    if (media.length) say(media.length === 1 ? `Reading ${media[0].file.name}…` : `Reading ${media.length} files…`);
    const uris = await Promise.all(media.map(({ file }) => dataUri(file)));
    if (isEditing(model)) {
      input.function = el.func.value;
      media.forEach(({ kind }, i) => {
        const field = EDIT_FIELDS[kind];
        if (kind === "reference_image") (input[field] ||= []).push(uris[i]);
        else input[field] = uris[i];
      });
    } else if (model.inputs.includes("media")) {
      if (media.length) input.media = media.map(({ kind }, i) => ({ type: kind, url: uris[i] }));
    } else if (model.inputs.includes("reference_urls")) {
      input.reference_urls = uris;
    }
    say("Submitting…");
    const headers = { "Content-Type": "application/json", "X-DashScope-Async": "enable" };
    // As the SDK does for oss:// references (wanserve accepts them either way).
    if (uploaded) headers["X-DashScope-OssResourceResolve"] = "enable";
    const created = await call("api/v1/services/aigc/video-generation/video-synthesis", {
      method: "POST",
      headers,
      body: JSON.stringify({ model: model.model, input, parameters }),
    });
    refreshTasks();
    watch(created.output.task_id);
  } catch (error) {
    showError(error);
    say("Not submitted.");
  } finally {
    el.submit.disabled = false;
  }
}

// -- Watching a task ------------------------------------------------------------------------------

function stopWatching() {
  if (watching) watching.controller.abort();
  watching = null;
  el.cancel.hidden = true;
}

function resetResult(taskId) {
  el.taskLine.textContent = `Task ${taskId}`;
  el.player.hidden = true;
  el.video.removeAttribute("src");
  el.video.load();
  el.download.hidden = true;
  setProgress(0);
  showError(null);
}

async function watch(taskId) {
  stopWatching();
  const controller = new AbortController();
  watching = { taskId, controller };
  resetResult(taskId);
  el.cancel.hidden = false;
  say("Queued.");
  try {
    const streamed = await streamEvents(taskId, controller.signal);
    if (!streamed && !controller.signal.aborted) await poll(taskId, controller.signal);
  } catch (error) {
    if (!controller.signal.aborted) {
      showError(error);
      say("Stopped watching the task.");
    }
  }
}

function onStatus(data) {
  if (TERMINAL.has(data.task_status)) return; // `done` follows with the whole body
  if (data.task_status === "PENDING") setProgress(0);
  say(describeStatus(data.task_status, data.queue_position));
}

function onProgress(data) {
  setProgress(data.progress);
  say(describeProgress(data.stage, data.step, data.total_steps, data.progress));
}

function onDone(body) {
  const out = body.output;
  el.cancel.hidden = true;
  if (out.task_status === "SUCCEEDED") {
    setProgress(100);
    say("Succeeded.");
    if (out.video_url) showVideo(out.video_url);
  } else if (out.task_status === "FAILED") {
    showError(new ApiError(out.code || "InternalError", out.message || "The task failed."));
    say("Failed.");
  } else if (out.task_status === "CANCELED") {
    say("Canceled.");
  } else {
    say("Unknown task: it has expired, or belongs to another key.");
  }
  refreshTasks();
}

function showVideo(url) {
  el.video.src = url;
  el.player.hidden = false;
  el.download.href = url;
  el.download.hidden = false;
}

// Reads the SSE stream; true once `done` arrived, false if the server has no event stream
// (the caller polls instead). A dropped connection is resumed with Last-Event-ID.
async function streamEvents(taskId, signal) {
  let lastId = null;
  for (let attempt = 0; attempt <= STREAM_RETRIES; attempt += 1) {
    const headers = authorized({ Accept: "text/event-stream" });
    if (lastId !== null) headers["Last-Event-ID"] = lastId;
    let response;
    try {
      response = await fetch(apiUrl(`api/v1/tasks/${encodeURIComponent(taskId)}/events`), {
        headers,
        signal,
        credentials: "omit",
        cache: "no-store",
      });
    } catch (error) {
      if (signal.aborted) return true;
      await sleep(1000 * (attempt + 1), signal);
      continue;
    }
    const type = response.headers.get("content-type") || "";
    // No such route (an older server), or this key has too many streams open: poll instead.
    if ([404, 405, 429].includes(response.status)) return false;
    if (!response.ok) await readBody(response); // throws the server's code: message
    if (!type.startsWith("text/event-stream")) return false;
    try {
      let done = false;
      for await (const event of sseEvents(response.body)) {
        if (event.id !== null) lastId = event.id;
        const data = event.data ? JSON.parse(event.data) : null;
        if (event.type === "status") onStatus(data);
        else if (event.type === "progress") onProgress(data);
        else if (event.type === "done") {
          onDone(data);
          done = true;
          break;
        }
      }
      if (done) return true;
    } catch (error) {
      if (signal.aborted) return true;
      if (error instanceof SyntaxError) throw error;
    }
    await sleep(1000 * (attempt + 1), signal);
  }
  return false; // the stream keeps failing: polling still works
}

// The text/event-stream format: fields up to a blank line make one event; lines starting with
// ':' are comments (the keep-alive).
async function* sseEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let event = { id: null, type: "message", data: "" };
  let hasData = false;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      const lines = buffer.split(/\r\n|\r|\n/);
      buffer = lines.pop();
      for (const line of lines) {
        if (line === "") {
          if (hasData) yield event;
          event = { id: event.id, type: "message", data: "" };
          hasData = false;
          continue;
        }
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon === -1 ? line : line.slice(0, colon);
        let value = colon === -1 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (field === "event") event.type = value;
        else if (field === "id") event.id = value;
        else if (field === "data") {
          event.data = hasData ? `${event.data}\n${value}` : value;
          hasData = true;
        }
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

async function poll(taskId, signal) {
  for (;;) {
    const body = await call(`api/v1/tasks/${encodeURIComponent(taskId)}`, { signal });
    const out = body.output;
    if (TERMINAL.has(out.task_status)) {
      onDone(body);
      return;
    }
    if (out.task_status === "RUNNING" && Number.isInteger(out.progress)) {
      onProgress({ stage: null, step: out.step, total_steps: out.total_steps, progress: out.progress });
    } else {
      onStatus({ task_status: out.task_status, queue_position: out.queue_position ?? null });
    }
    await sleep(POLL_MS, signal);
  }
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    }, { once: true });
  }).then(() => {
    if (signal.aborted) throw new DOMException("aborted", "AbortError");
  });
}

async function cancelTask() {
  if (!watching) return;
  try {
    await call(`api/v1/tasks/${encodeURIComponent(watching.taskId)}/cancel`, { method: "POST" });
    say("Cancel requested.");
  } catch (error) {
    showError(error);
  }
}

// -- Recent tasks ---------------------------------------------------------------------------------

async function refreshTasks() {
  if (!apiKey) return;
  let page;
  try {
    page = await call("api/v1/tasks?page_size=10");
  } catch (error) {
    showError(error);
    return;
  }
  el.tasks.replaceChildren(...page.tasks.map(taskItem));
  el.tasksEmpty.hidden = page.tasks.length > 0;
}

function taskItem(task) {
  // Text only (textContent): prompts are user input and never become markup.
  const item = document.createElement("li");
  item.className = "task";
  item.dataset.taskId = task.task_id;
  const badge = document.createElement("span");
  badge.className = `badge ${task.task_status}`;
  badge.textContent = task.task_status;
  const what = document.createElement("div");
  const model = document.createElement("div");
  model.className = "model";
  model.textContent = task.model_name;
  const when = document.createElement("div");
  when.className = "when";
  when.textContent = task.submit_time ? `${task.submit_time} (UTC+8)` : "";
  what.append(model, when);
  const prompt = document.createElement("div");
  prompt.className = "prompt";
  prompt.textContent = task.orig_prompt || "(no prompt)";
  prompt.title = task.orig_prompt || "";
  const links = document.createElement("div");
  links.className = "links";
  const show = document.createElement("button");
  show.type = "button";
  show.className = "secondary small";
  show.textContent = TERMINAL.has(task.task_status) ? "Show" : "Watch";
  show.setAttribute("aria-label", `${show.textContent} task ${task.task_id}`);
  show.addEventListener("click", () => showTask(task));
  links.append(show);
  if (task.video_url) {
    const link = document.createElement("a");
    link.className = "button secondary small";
    link.href = task.video_url;
    link.download = "";
    link.textContent = "Download";
    link.setAttribute("aria-label", `Download the video of task ${task.task_id}`);
    links.append(link);
  }
  item.append(badge, what, prompt, links);
  return item;
}

function showTask(task) {
  if (!TERMINAL.has(task.task_status)) {
    watch(task.task_id);
    return;
  }
  stopWatching();
  resetResult(task.task_id);
  onDone({ output: task });
  document.getElementById("result-title").scrollIntoView({ behavior: "smooth", block: "start" });
}

// -- Drag and drop onto the file fields -----------------------------------------------------------

for (const zone of document.querySelectorAll(".drop")) {
  const input = zone.querySelector("input[type=file]");
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    if (!input.disabled && event.dataTransfer.files.length) {
      const files = new DataTransfer();
      const dropped = [...event.dataTransfer.files];
      for (const file of input.multiple ? dropped : dropped.slice(0, 1)) files.items.add(file);
      input.files = files.files;
      input.dispatchEvent(new Event("change"));
    }
  });
  input.addEventListener("change", () => preview(zone, input));
}

function preview(zone, input) {
  for (const img of zone.querySelectorAll("img.preview")) {
    URL.revokeObjectURL(img.src);
    img.remove();
  }
  for (const file of input.files) {
    if (!file.type.startsWith("image/")) continue;
    const img = document.createElement("img");
    img.className = "preview";
    img.alt = `Preview of ${file.name}`;
    img.src = URL.createObjectURL(file);
    zone.append(img);
  }
}

// -- Wiring -----------------------------------------------------------------------------------------

el.keyForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const key = el.key.value.trim();
  if (key) useKey(key);
});
el.forget.addEventListener("click", forgetKey);
el.model.addEventListener("change", adaptForm);
el.func.addEventListener("change", adaptMedia);
MEDIA.reference_image.addEventListener("change", renderRoles);
el.prompt.addEventListener("input", countPrompt);
el.form.addEventListener("submit", submit);
el.cancel.addEventListener("click", cancelTask);
el.refresh.addEventListener("click", refreshTasks);

if (apiKey) useKey(apiKey);
