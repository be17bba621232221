// Prepends other people's new posts to the feed as they arrive.
"use strict";
(function () {
  var posts = document.getElementById("posts");
  function render(data) {
    if (posts.querySelector('[data-post-id="' + data.post_id + '"]')) return;
    var empty = document.getElementById("no-posts");
    if (empty) empty.remove();
    var article = document.createElement("article");
    article.className = "post fresh";
    article.dataset.postId = data.post_id;
    var img = document.createElement("img");
    img.src = data.photo_url;
    img.alt = "Photo by " + data.author;
    var body = document.createElement("div");
    body.className = "post-body";
    var author = document.createElement("strong");
    author.className = "author";
    author.textContent = data.author;  // text, never HTML
    var caption = document.createElement("p");
    caption.className = "caption";
    caption.textContent = data.caption;
    var when = document.createElement("time");
    when.textContent = "just now";
    body.append(author, caption, when);
    article.append(img, body);
    posts.prepend(article);
  }
  window.EventStream({
    onEvents: function (items) {
      items.forEach(function (item) {
        if (item.event.type === "photo.posted") render(item.event.data);
      });
    },
  });
})();
