// Loaded on pages with ipywidgets, after require.js and before the ipywidgets HTML manager
// (embed-amd.js); both are served from _static/vendor/ so that widgets render offline.
(function () {
  var src = document.currentScript.src;
  var vendor = src.slice(0, src.lastIndexOf("/") + 1) + "vendor/html-manager/";

  // The manager's modules load their assets (the Font Awesome fonts of widget icons) from the
  // folder of their RequireJS module URL, which defaults to the page's own folder. Give every
  // module it defines a URL inside the vendored copy, where webpack put those fonts.
  var names = ["base", "base7", "controls", "controls7", "html-manager"];
  var paths = { "@jupyter-widgets/html-manager/dist": vendor.slice(0, -1) };
  names.forEach(function (name) { paths["@jupyter-widgets/" + name] = vendor + name; });
  window.require.config({ paths: paths });

  // ipywidgets 8 typesets widget labels with the MathJax 2 call MathJax.Hub.Queue(["Typeset",
  // MathJax.Hub, element]); Sphinx loads MathJax 3, which has no Hub. Translate the call once
  // MathJax 3 is there (it is a deferred script, run before DOMContentLoaded; widgets render
  // on window load).
  document.addEventListener("DOMContentLoaded", function () {
    var MathJax = window.MathJax;
    if (!MathJax || MathJax.Hub || !MathJax.startup) return;
    MathJax.Hub = {
      Queue: function () {
        Array.prototype.forEach.call(arguments, function (command) {
          if (Array.isArray(command) && command[0] === "Typeset" && command[2]) {
            MathJax.startup.promise = MathJax.startup.promise.then(function () {
              return MathJax.typesetPromise([command[2]]);
            });
          }
        });
      },
    };
  });
})();
