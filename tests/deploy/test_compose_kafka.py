"""The kafka and kafka-init services of docker-compose.yml against what the
settings tell the clients: listeners the clients can reach, one broker that is
its own controller, the topics created with the partitions the app expects,
and record size limits that let the largest records through."""

from __future__ import annotations

from typing import Any

from tests.support.compose import (
    APP_SERVICES,
    depends_on,
    kafka_settings,
    kafka_topics_calls,
    listeners,
    names_of,
    networks_of,
    replicas,
    service,
)


def test_clients_are_told_a_listener_the_broker_advertises_on_their_network(
    compose: dict[str, Any], app_settings: dict[str, dict[str, Any]]
) -> None:
    kafka = kafka_settings(service(compose, "kafka"))
    advertised = listeners(kafka["KAFKA_ADVERTISED_LISTENERS"])
    bound = listeners(kafka["KAFKA_LISTENERS"])
    protocols = dict(
        item.split(":") for item in kafka["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    for name in APP_SERVICES:
        resolved = app_settings[name]
        assert networks_of(service(compose, name)) & networks_of(service(compose, "kafka"))
        for server in resolved["KAFKA_BOOTSTRAP_SERVERS"].split(","):
            host, _, port = server.strip().rpartition(":")
            assert host in names_of(compose, "kafka"), f"{name}: {host} is not the kafka service"
            matching = [n for n, address in advertised.items() if address == (host, int(port))]
            assert matching, f"{name} is told {server}; kafka advertises {advertised}"
            listener = matching[0]
            assert bound[listener][1] == int(port), f"{listener} is bound to another port"
            assert protocols[listener] == resolved["KAFKA_SECURITY_PROTOCOL"]
        assert resolved["KAFKA_ENABLE_IDEMPOTENCE"] is True, "Apache Kafka supports it"


def test_the_broker_is_its_own_controller_quorum(compose: dict[str, Any]) -> None:
    kafka = kafka_settings(service(compose, "kafka"))
    assert set(kafka["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    bound = listeners(kafka["KAFKA_LISTENERS"])
    controller = kafka["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert controller in bound
    assert controller not in listeners(kafka["KAFKA_ADVERTISED_LISTENERS"])
    assert kafka["KAFKA_INTER_BROKER_LISTENER_NAME"] in bound
    assert kafka["KAFKA_INTER_BROKER_LISTENER_NAME"] != controller
    voters = kafka["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
    assert len(voters) == 1
    node_id, _, address = voters[0].partition("@")
    host, _, port = address.rpartition(":")
    assert node_id == kafka["KAFKA_NODE_ID"]
    assert host in names_of(compose, "kafka") and int(port) == bound[controller][1]
    # One broker: an internal topic with more replicas could never be created.
    assert int(kafka["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) == 1
    assert int(kafka["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"]) == 1


def test_kafka_init_creates_the_topics_the_app_uses_with_several_partitions(
    compose: dict[str, Any], app_settings: dict[str, dict[str, Any]]
) -> None:
    calls = kafka_topics_calls(compose)
    advertised = listeners(kafka_settings(service(compose, "kafka"))["KAFKA_ADVERTISED_LISTENERS"])
    for resolved in app_settings.values():
        wanted = {resolved["KAFKA_EVENTS_TOPIC"], resolved["KAFKA_DLQ_TOPIC"]}
        assert {call["--topic"] for call in calls} == wanted
    for call in calls:
        host, _, port = call["--bootstrap-server"].rpartition(":")
        assert (host, int(port)) in advertised.values()
        # The app creates missing topics with its own settings: both must agree.
        assert int(call["--partitions"]) == app_settings["analytics"]["KAFKA_TOPIC_PARTITIONS"]
        assert int(call["--partitions"]) >= 2
        assert (
            int(call["--replication-factor"])
            == app_settings["analytics"]["KAFKA_TOPIC_REPLICATION"]
        )
    assert depends_on(service(compose, "kafka-init"))["kafka"]["condition"] == "service_healthy"
    # Only kafka-init and the app create topics, never a stray producer.
    kafka = kafka_settings(service(compose, "kafka"))
    assert kafka["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


def test_the_broker_accepts_the_largest_records_the_app_sends_and_consumers_fetch(
    compose: dict[str, Any], app_settings: dict[str, dict[str, Any]]
) -> None:
    limit = int(kafka_settings(service(compose, "kafka"))["KAFKA_MESSAGE_MAX_BYTES"])
    for resolved in app_settings.values():
        # monitor/kafka/clients.py and monitor/workers/base.py allow 64 KiB over each for headers.
        largest = max(resolved["MAX_EVENT_BYTES"], resolved["DLQ_MAX_RECORD_BYTES"]) + 64 * 1024
        assert largest <= limit <= resolved["KAFKA_MAX_FETCH_BYTES"]


def test_no_more_workers_than_partitions(
    compose: dict[str, Any], app_settings: dict[str, dict[str, Any]]
) -> None:
    for name in ("analytics", "notifications"):
        partitions = app_settings[name]["KAFKA_TOPIC_PARTITIONS"]
        assert replicas(service(compose, name)) <= partitions, f"{name} replicas would sit idle"
