// The search page: state lives in the URL (?q=...&kind=... or ?similar=ID), so a search can be
// shared and the browser's back button works. Results are built with textContent, never markup,
// and names, uris and ids reach the page as JSON strings and leave it only through URLSearchParams.
"use strict";

const RESULTS = 24;
const $ = (id) => document.getElementById(id);
const form = $("search"), input = $("q"), kind = $("kind"), status = $("status"), list = $("results");
const player = $("player"), video = $("video"), playing = $("playing");
let segmentEnd = null;

function clock(seconds) {
  const minutes = Math.floor(seconds / 60);
  return `${minutes}:${(seconds - minutes * 60).toFixed(1).padStart(4, "0")}`;
}

function span(result) {
  return result.start === null ? "whole video" : `${clock(result.start)}–${clock(result.end)}`;
}

// The server names each result (``name``: the file's own name, never decoded here), so the page
// shows what the file system holds: "%2e%2e%2f.mp4" stays that, "100%.mp4" never throws.

function say(text, isError = false) {
  status.textContent = text;
  status.classList.toggle("error", isError);
}

function play(result, card) {
  document.querySelectorAll(".result.current").forEach((node) => node.classList.remove("current"));
  card.classList.add("current");
  segmentEnd = result.end;
  const start = result.start ?? 0;
  // The media fragment makes the browser fetch from the moment's start; currentTime is set again
  // once the metadata is known, for browsers that ignore fragments.
  video.src = `${result.media}#t=${start}${result.end === null ? "" : `,${result.end}`}`;
  video.addEventListener("loadedmetadata", () => {
    if (Math.abs(video.currentTime - start) > 0.25) video.currentTime = start;
    video.play().catch(() => {});  // autoplay refused: the controls are there
  }, { once: true });
  playing.textContent = `${result.name} · ${span(result)}`;
  player.hidden = false;
  player.scrollIntoView({ block: "nearest" });
}

video.addEventListener("timeupdate", () => {
  if (segmentEnd !== null && video.currentTime >= segmentEnd && !video.paused) {
    video.pause();
    segmentEnd = null;  // playing on past the moment is the user's choice
  }
});

function closePlayer() {
  video.pause();
  video.removeAttribute("src");
  video.load();
  player.hidden = true;
}

function card(result) {
  const item = document.createElement("li");
  item.className = "result";
  const button = document.createElement("button");
  button.type = "button";
  button.className = "play";
  button.setAttribute("aria-label", `Play ${result.name}, ${span(result)}, score ${result.score.toFixed(3)}`);
  const image = document.createElement("img");
  image.src = result.thumbnail;
  image.alt = "";
  image.loading = "lazy";
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = result.name;
  name.title = result.uri;
  const meta = document.createElement("span");
  meta.className = "meta";
  meta.textContent = `score ${result.score.toFixed(3)} · ${span(result)}`;
  button.append(image, name, meta);
  button.addEventListener("click", () => play(result, item));
  const similar = document.createElement("button");
  similar.type = "button";
  similar.className = "similar";
  similar.textContent = "Similar";
  similar.setAttribute("aria-label", `Videos similar to ${result.name}`);
  similar.addEventListener("click", () => navigate({ similar: result.video_id, name: result.name, kind: kind.value }));
  item.append(button, similar);
  item.dataset.videoId = result.video_id;
  return item;
}

async function load(url, describe) {
  say("Searching…");
  list.replaceChildren();
  let body;
  try {
    const response = await fetch(url, { headers: { Accept: "application/json" } });
    body = await response.json().catch(() => ({ error: `the server answered ${response.status}` }));
    if (!response.ok) throw new Error(body.error || `the server answered ${response.status}`);
  } catch (error) {
    say(`Search failed: ${error.message}`, true);
    return;
  }
  list.replaceChildren(...body.results.map(card));
  say(body.results.length
    ? `${body.results.length} ${body.results.length === 1 ? "video" : "videos"} ${describe} (${body.took_ms} ms)`
    : `No videos ${describe}. Try other words, or show both videos and moments.`);
}

function run() {
  const params = new URLSearchParams(location.search);
  input.value = params.get("q") || "";
  kind.value = params.get("kind") || "";
  const filter = kind.value ? `&kind=${encodeURIComponent(kind.value)}` : "";
  if (params.get("similar")) {
    const name = params.get("name") || "this video";
    load(`/api/similar?id=${encodeURIComponent(params.get("similar"))}&k=${RESULTS}${filter}`, `similar to ${name}`);
  } else if (input.value.trim()) {
    load(`/api/search?q=${encodeURIComponent(input.value.trim())}&k=${RESULTS}${filter}`, `match “${input.value.trim()}”`);
  } else {
    list.replaceChildren();
    say("Type what you are looking for and press Enter.");
  }
}

function navigate(state) {
  const params = new URLSearchParams(Object.entries(state).filter(([, value]) => value));
  history.pushState(null, "", `/?${params}`);
  run();
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  if (!input.value.trim()) {
    say("Type some words to search for.", true);
    input.focus();
    return;
  }
  navigate({ q: input.value.trim(), kind: kind.value });
});
kind.addEventListener("change", () => {
  const params = new URLSearchParams(location.search);
  if (params.get("q") || params.get("similar")) {
    params.set("kind", kind.value);
    if (!kind.value) params.delete("kind");
    history.pushState(null, "", `/?${params}`);
    run();
  }
});
$("close").addEventListener("click", closePlayer);
window.addEventListener("popstate", run);
document.addEventListener("keydown", (event) => {
  const typing = ["INPUT", "SELECT", "TEXTAREA"].includes(document.activeElement.tagName);
  if (event.key === "Escape" && !player.hidden) {
    closePlayer();
  } else if (event.key === "/" && !typing) {
    event.preventDefault();
    input.focus();
    input.select();
  } else if (event.key === "s" && !typing && !event.ctrlKey && !event.metaKey) {
    const item = document.activeElement.closest(".result");
    if (item) item.querySelector(".similar").click();
  }
});
run();
