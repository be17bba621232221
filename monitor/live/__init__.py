"""WebSockets: read the topic, fan out, deliver, replay."""
