/*
 * A stand-in for Web Workers on pages opened from file://, where browsers refuse to start
 * workers. mkdocs-material runs its search in a worker; without this, the search box of the
 * offline site would stay empty.
 *
 * Material's offline plugin would otherwise load a shim like this from unpkg.com. It only
 * does that when no entry of extra.polyfills mentions "iframe-worker", so mkdocs.yml lists
 * this file there, and the site needs no network at all.
 *
 * How: the worker script runs in a hidden same-origin iframe. postMessage crosses between the
 * page and the frame as window messages, and importScripts appends <script> tags, returning a
 * Promise: material's worker awaits it. Over http(s) this file does nothing.
 */
(function () {
  "use strict";
  if (location.protocol !== "file:" || typeof EventTarget !== "function") return;

  var RUNTIME =
    "postMessage=function(data){parent.postMessage(data,'*')};" +
    "importScripts=function(){var urls=Array.prototype.slice.call(arguments);" +
    "return urls.reduce(function(done,url){return done.then(function(){" +
    "return new Promise(function(resolve,reject){var s=document.createElement('script');" +
    "s.src=url;s.onload=function(){resolve()};s.onerror=function(){reject(new Error('cannot load '+url))};" +
    "document.body.appendChild(s)})})},Promise.resolve())};";

  class FileWorker extends EventTarget {
    constructor(url) {
      super();
      this.onmessage = null;
      this.onerror = null;
      this.url = String(url);
      this.frame = document.createElement("iframe");
      this.frame.hidden = true;
      document.body.appendChild(this.frame);
      var win = this.frame.contentWindow;
      var self = this;
      this.ready = new Promise(function (resolve) {
        win.document.open();
        win.document.write(
          "<!doctype html><html><body><script>" + RUNTIME + "<\/script>" +
          "<script src=\"" + self.url.replace(/"/g, "%22") + "\"><\/script></body></html>"
        );
        win.document.close();
        win.addEventListener("load", function () { resolve(); });
        win.addEventListener("error", function (ev) { self.emit("error", ev); });
      });
      this.listener = function (ev) {
        if (self.frame.contentWindow && ev.source === self.frame.contentWindow) {
          self.emit("message", new MessageEvent("message", { data: ev.data }));
        }
      };
      window.addEventListener("message", this.listener);
    }

    emit(type, ev) {
      var event = type === "error"
        ? new ErrorEvent("error", { message: ev.message, filename: ev.filename, lineno: ev.lineno, error: ev.error })
        : ev;
      this.dispatchEvent(event);
      var handler = type === "error" ? this.onerror : this.onmessage;
      if (typeof handler === "function") handler.call(this, event);
    }

    postMessage(data) {
      var frame = this.frame;
      this.ready.then(function () {
        var win = frame.contentWindow;
        if (win) win.dispatchEvent(new win.MessageEvent("message", { data: data }));
      });
    }

    terminate() {
      window.removeEventListener("message", this.listener);
      this.frame.remove();
    }
  }

  window.Worker = FileWorker;
})();
