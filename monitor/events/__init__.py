"""The event contract and its only way onto Kafka, in the order an event takes it:
``schema`` (the envelope), ``emit`` (saved to the outbox with the change),
``outbox`` (the table), ``after_response`` (the hook that starts publishing once
a response is sent), ``publisher`` (the eager send), ``relay`` (the second
chance), and ``sending`` (the send both use)."""
