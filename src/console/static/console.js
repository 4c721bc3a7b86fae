// valetkey console: the WebAuthn steps the server cannot take for the
// browser. Everything else is plain HTML; nothing here is inline.
"use strict";

const b64 = {
  decode(text) {
    const s = text.replace(/-/g, "+").replace(/_/g, "/");
    const raw = atob(s + "=".repeat((4 - (s.length % 4)) % 4));
    return Uint8Array.from(raw, (c) => c.charCodeAt(0)).buffer;
  },
  encode(buffer) {
    const bytes = new Uint8Array(buffer);
    let raw = "";
    for (const b of bytes) raw += String.fromCharCode(b);
    return btoa(raw).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  },
};

const csrf = () => document.querySelector('meta[name="csrf"]').content;

function say(text, kind) {
  const el = document.getElementById("message");
  el.textContent = text;
  el.className = "message " + (kind || "error");
  el.hidden = false;
}

async function post(url, body) {
  const response = await fetch(url, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
    body: JSON.stringify(body),
  });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(answer.detail || "the broker refused (" + response.status + ")");
  return answer;
}

function creationOptions(options) {
  const pk = structuredClone(options.publicKey);
  pk.challenge = b64.decode(pk.challenge);
  pk.user.id = b64.decode(pk.user.id);
  for (const c of pk.excludeCredentials || []) c.id = b64.decode(c.id);
  return { publicKey: pk };
}

function requestOptions(options) {
  const pk = structuredClone(options.publicKey);
  pk.challenge = b64.decode(pk.challenge);
  for (const c of pk.allowCredentials || []) c.id = b64.decode(c.id);
  return { publicKey: pk };
}

function registration(credential) {
  return {
    id: credential.id,
    rawId: b64.encode(credential.rawId),
    type: credential.type,
    response: {
      clientDataJSON: b64.encode(credential.response.clientDataJSON),
      attestationObject: b64.encode(credential.response.attestationObject),
      transports: credential.response.getTransports ? credential.response.getTransports() : [],
    },
    extensions: credential.getClientExtensionResults(),
  };
}

function assertion(credential) {
  const r = credential.response;
  return {
    id: credential.id,
    rawId: b64.encode(credential.rawId),
    type: credential.type,
    response: {
      clientDataJSON: b64.encode(r.clientDataJSON),
      authenticatorData: b64.encode(r.authenticatorData),
      signature: b64.encode(r.signature),
      userHandle: r.userHandle ? b64.encode(r.userHandle) : null,
    },
    extensions: credential.getClientExtensionResults(),
  };
}

async function enroll(form) {
  const start = await post("/console/enroll/start", {
    approver: form.approver.value.trim(),
    code: form.code.value.trim(),
  });
  const credential = await navigator.credentials.create(creationOptions(start.options));
  await post("/console/enroll/finish", { ceremony: start.ceremony, credential: registration(credential) });
  say(
    "Your passkey is registered. An enrolled approver must vouch for it before you can sign in: " +
      "valetkey approver vouch " + form.approver.value.trim() + " --as THEM",
    "ok",
  );
  setTimeout(() => location.assign("/console/signin"), 800);
}

async function signin(form) {
  const start = await post("/console/signin/start", { approver: form.approver.value.trim() });
  const credential = await navigator.credentials.get(requestOptions(start.options));
  const done = await post("/console/signin/finish", { ceremony: start.ceremony, credential: assertion(credential) });
  location.assign(done.next);
}

async function decide(box, verdict) {
  const id = box.dataset.approval;
  const reason = document.getElementById("reason").value.trim();
  if (verdict === "deny" && !reason) throw new Error("write the reason the agent will read, then deny");
  const start = await post("/console/approvals/" + id + "/start", { verdict, reason: reason || null });
  const credential = await navigator.credentials.get(requestOptions(start.options));
  const done = await post("/console/approvals/" + id + "/finish", {
    ceremony: start.ceremony,
    credential: assertion(credential),
  });
  say("Recorded: the request is " + done.status + ".", "ok");
  setTimeout(() => location.reload(), 600);
}

async function vouch(name) {
  const start = await post("/console/vouch/" + encodeURIComponent(name) + "/start", {});
  const credential = await navigator.credentials.get(requestOptions(start.options));
  await post("/console/vouch/" + encodeURIComponent(name) + "/finish", {
    ceremony: start.ceremony,
    credential: assertion(credential),
  });
  say("You vouched for " + name + "'s factor: it is in use now.", "ok");
  setTimeout(() => location.reload(), 800);
}

document.addEventListener("DOMContentLoaded", () => {
  for (const item of document.querySelectorAll("[data-vouch]")) {
    const button = item.querySelector("button");
    button.addEventListener("click", () => {
      button.disabled = true;
      vouch(item.dataset.vouch)
        .catch((e) => say(e.message))
        .finally(() => {
          button.disabled = false;
        });
    });
  }
  for (const form of document.querySelectorAll("form[data-flow]")) {
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const flow = form.dataset.flow === "enroll" ? enroll : signin;
      flow(form).catch((e) => say(e.message));
    });
  }
  const box = document.querySelector(".decide");
  if (box) {
    for (const button of box.querySelectorAll("button[data-verdict]")) {
      button.addEventListener("click", () => {
        for (const b of box.querySelectorAll("button")) b.disabled = true;
        decide(box, button.dataset.verdict)
          .catch((e) => say(e.message))
          .finally(() => {
            for (const b of box.querySelectorAll("button")) b.disabled = false;
          });
      });
    }
  }
});
