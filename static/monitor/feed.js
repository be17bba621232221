// The feed and a post's page: likes, comments and deletes through fetch (the
// forms work without JavaScript too), and everyone's new posts, likes,
// comments and deletes applied live from the event stream (stream.js). A
// profile page uses it for its follow button.
//
// The page's own answers and the live events go through the same idempotent
// steps, so an action shows once whichever arrives first: a post or comment
// is added once (by id) and never again once deleted, and a count is only
// replaced by a newer one (each comes with the time of the event that set
// it; the page's own counts are as of data-rendered-at).
// User text is always set with textContent, never as HTML.
"use strict";
(function () {
  var posts = document.getElementById("posts");
  var meId = posts ? Number(posts.dataset.meId) : NaN;
  var renderedAt = posts ? posts.dataset.renderedAt : "";
  var deletedPosts = new Set();
  var deletedComments = new Set();
  var LIVE_TYPES = [
    "photo.posted", "photo.deleted", "photo.liked", "photo.unliked",
    "comment.added", "comment.deleted",
  ];

  function postCard(id) {
    return posts && posts.querySelector('article.post[data-post-id="' + Number(id) + '"]');
  }

  function commentItem(id) {
    return document.querySelector('li.comment[data-comment-id="' + Number(id) + '"]');
  }

  // Whether a value set at time `at` is at least as new as the one shown for `key`.
  function newer(card, key, at) {
    var shown = card.dataset[key] || renderedAt;
    if (!at || (shown && at < shown)) return false;
    card.dataset[key] = at;
    return true;
  }

  function setLikes(card, count, at) {
    if (typeof count !== "number" || !newer(card, "likesAt", at)) return;
    card.querySelector(".like-count").textContent = String(count);
  }

  function setLiked(card, liked, at) {
    if (!newer(card, "likedAt", at)) return;
    var form = card.querySelector(".like-form");
    form.action = liked ? form.dataset.unlikeUrl : form.dataset.likeUrl;
    form.querySelector(".like-button").setAttribute("aria-pressed", liked ? "true" : "false");
  }

  function setComments(card, count, at) {
    if (!card || typeof count !== "number" || !newer(card, "commentsAt", at)) return;
    card.querySelector(".comment-count a").textContent =
      count + (count === 1 ? " comment" : " comments");
  }

  // A copy of a <template>, its URLs and ids made for one post or comment:
  // in the template, 0 stands for the id and __name__ for the username.
  var TEMPLATED = ["href", "action", "data-like-url", "data-unlike-url", "for", "id"];
  function fromTemplate(templateId, id, username) {
    var node = document.getElementById(templateId).content.firstElementChild.cloneNode(true);
    [node].concat(Array.from(node.querySelectorAll("*"))).forEach(function (element) {
      TEMPLATED.forEach(function (name) {
        var value = element.getAttribute(name);
        if (value === null) return;
        value = value.replace("/0/", "/" + id + "/").replace(/-0$/, "-" + id);
        element.setAttribute(name, value.replace("__name__", encodeURIComponent(username)));
      });
    });
    return node;
  }

  function addPost(data) {
    var id = data.post_id;
    if (posts.dataset.liveNew !== "true" || deletedPosts.has(id) || postCard(id)) return;
    var card = fromTemplate("post-template", id, data.author);
    card.id = "post-" + id;
    card.dataset.postId = id;
    card.dataset.authorId = data.author_id;
    card.querySelector(".author").textContent = data.author;
    var photo = card.querySelector("img.photo");
    photo.src = data.thumbnail_url || data.photo_url;
    photo.alt = "Photo by " + data.author;
    card.querySelector(".caption").textContent = data.caption;
    card.querySelector(".comments").id = "comments-" + id;
    if (data.author_id !== meId) card.querySelector(".delete-post").remove();
    var empty = document.getElementById("no-posts");
    if (empty) empty.remove();
    posts.prepend(card);
  }

  function removePost(id) {
    deletedPosts.add(Number(id));
    var card = postCard(id);
    if (!card) return;
    card.remove();
    var notice = document.getElementById("post-gone");
    if (notice) notice.hidden = false;
  }

  // comment: {id, post_id, user_id, username, text}
  function addComment(comment) {
    var card = postCard(comment.post_id);
    if (!card || deletedComments.has(comment.id) || commentItem(comment.id)) return;
    var item = fromTemplate("comment-template", comment.id, comment.username);
    item.id = "comment-" + comment.id;
    item.dataset.commentId = comment.id;
    item.querySelector(".author").textContent = comment.username;
    item.querySelector(".comment-text").textContent = comment.text;
    if (comment.user_id !== meId) item.querySelector(".delete-comment").remove();
    card.querySelector(".comments").append(item);
  }

  function removeComment(id) {
    deletedComments.add(Number(id));
    var item = commentItem(id);
    if (item) item.remove();
  }

  function applyEvent(event) {
    var data = event.data;
    var card = data.post_id === undefined ? null : postCard(data.post_id);
    switch (event.type) {
      case "photo.posted":
        addPost(data);
        break;
      case "photo.deleted":
        removePost(data.post_id);
        break;
      case "photo.liked":
      case "photo.unliked":
        if (!card) break;
        setLikes(card, data.like_count, event.time);
        // Liked or unliked by this user elsewhere (another tab).
        if (data.user_id === meId) setLiked(card, event.type === "photo.liked", event.time);
        break;
      case "comment.added":
        addComment({
          id: data.comment_id, post_id: data.post_id, user_id: data.user_id,
          username: data.username, text: data.text,
        });
        setComments(card, data.comment_count, event.time);
        break;
      case "comment.deleted":
        removeComment(data.comment_id);
        setComments(card, data.comment_count, event.time);
        break;
    }
  }

  function setFollowing(form, answer) {
    var button = form.querySelector("button");
    form.action = answer.following ? form.dataset.unfollowUrl : form.dataset.followUrl;
    button.textContent = answer.following ? "Unfollow" : "Follow";
    button.classList.toggle("secondary", answer.following);
    var count = document.getElementById("follower-count");
    if (count) count.textContent = String(answer.follower_count);
    var noun = document.getElementById("follower-noun");
    if (noun) noun.textContent = answer.follower_count === 1 ? "follower" : "followers";
  }

  // What each form's JSON answer does to the page (form[data-fetch]).
  var answered = {
    like: function (form, answer) {
      var card = form.closest("article.post");
      setLiked(card, answer.liked, answer.at);
      setLikes(card, answer.like_count, answer.at);
    },
    comment: function (form, answer) {
      addComment(answer.comment);
      setComments(postCard(answer.post_id), answer.comment_count, answer.at);
      form.reset();
    },
    "delete-comment": function (form, answer) {
      removeComment(answer.comment_id);
      setComments(postCard(answer.post_id), answer.comment_count, answer.at);
    },
    "delete-post": function (form, answer) {
      removePost(answer.post_id);
    },
    follow: setFollowing,
  };

  // A delete answered 404: it is gone already.
  var alreadyGone = {
    "delete-comment": function (form) { removeComment(form.closest("li.comment").dataset.commentId); },
    "delete-post": function (form) { removePost(form.closest("article.post").dataset.postId); },
  };

  function errorBox(form, create) {
    var holder = form.closest(".post-body, article.post, .profile") || form.parentNode;
    var box = holder.querySelector(":scope > .action-error");
    if (!box && create) {
      box = document.createElement("p");
      box.className = "action-error errors";
      box.setAttribute("role", "alert");
      holder.append(box);
    }
    return box;
  }

  function showError(form, message) {
    errorBox(form, true).textContent = message;
  }

  document.addEventListener("submit", function (submit) {
    var form = submit.target;
    var kind = form.dataset.fetch;
    if (!kind || !answered[kind] || !window.fetch) return;
    submit.preventDefault();
    if (form.getAttribute("aria-busy") === "true") return;  // the first click is on its way
    if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) return;
    form.setAttribute("aria-busy", "true");
    fetch(form.action, {
      method: "POST",
      body: new FormData(form),
      headers: { Accept: "application/json" },
      credentials: "same-origin",
    })
      .then(function (response) {
        return response.json().catch(function () { return {}; }).then(function (answer) {
          if (response.ok) {
            var box = errorBox(form, false);
            if (box) box.remove();
            answered[kind](form, answer);
          } else if (response.status === 404 && alreadyGone[kind]) {
            alreadyGone[kind](form);
          } else {
            showError(form, answer.error ||
              "That did not work (HTTP " + response.status + "). Reload the page and try again.");
          }
        });
      })
      .catch(function () {
        showError(form, "Could not reach the server. Check the connection and try again.");
      })
      .then(function () { form.removeAttribute("aria-busy"); });
  });

  if (posts && window.EventStream) {
    // Only the site's own, signed events change the page: what anyone else
    // wrote on the topic (a forged like, say) is for the operators' dashboard.
    var filter = { types: LIVE_TYPES, verified: true };
    if (posts.dataset.subject) filter.subject = posts.dataset.subject;
    window.EventStream({
      filter: filter,
      onEvents: function (items) {
        items.forEach(function (item) { if (item.verified === true) applyEvent(item.event); });
      },
    });
  }
})();
