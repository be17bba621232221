"""What operators read: the overview (topics, groups, lag) and the rates."""
