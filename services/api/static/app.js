// Refresh the experiment's image table while any job is queued or running; reload plots when it settles.
(function () {
  "use strict";
  var body = document.querySelector("tbody[data-refresh]");
  function pending(root) {
    var marker = root.querySelector("[data-pending]");
    return marker && marker.getAttribute("data-pending") === "yes";
  }
  if (body && pending(body)) {
    var timer = setInterval(function () {
      fetch(body.getAttribute("data-refresh"), {credentials: "same-origin"})
        .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
        .then(function (html) {
          body.innerHTML = html;
          if (!pending(body)) {
            clearInterval(timer);
            document.querySelectorAll("img[data-plot]").forEach(function (img) {
              var url = new URL(img.src);  // keep the filter in the query; only bust the cache
              url.searchParams.set("t", Date.now());
              img.src = url.toString();
            });
          }
        })
        .catch(function () { /* try again on the next tick */ });
    }, 2000);
  }
  if (document.querySelector("[data-reload-while-pending]")) {
    setTimeout(function () { window.location.reload(); }, 2000);
  }
})();
