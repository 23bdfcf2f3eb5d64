"""``yidi-topics``: check the platform topics against their specs, and fix one, by exact name.

    yidi-topics check                          # create what is missing; list topics off their spec
    yidi-topics configure settlement.requests  # set the configs its spec sets (compaction, its lag, timestamps)
    yidi-topics compact refdata.persons        # the same, for a topic its spec compacts only (cleanup.policy=compact)
    yidi-topics delete refdata.persons         # delete that topic only (not refdata.persons.dlq)

Names are given without the namespace (``YIDI_NAMESPACE`` or ``--namespace`` is put before them)
and must be platform topics (docs/topics.md). ``delete`` loses what the topic holds: stop the
services first, and reload a feed afterwards (``yidi-load``); the services create it again, with
its spec, when they start. docs/runbook.md, "Topics", says when to use which.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from yidi.platform.kafka import configs_off_spec, ensure_platform_topics, on_spec
from yidi.platform.topics import all_topic_specs

DYNAMIC_TOPIC_CONFIG = 1  # a DescribeConfigs entry's source: set on the topic itself


@contextlib.asynccontextmanager
async def _admin(bootstrap: str) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


def _refused(topic: str, code: int, message: str | None) -> None:
    """Stop with the broker's reason when it answered an error for ``topic``."""
    if code:
        raise SystemExit(f"yidi-topics: {topic}: {message or f'error {code}'}")


def _spec(name: str):
    specs = {spec.name: spec for spec in all_topic_specs()}
    if name not in specs:
        raise SystemExit(f"yidi-topics: {name!r} is not a platform topic (docs/topics.md lists them)")
    return specs[name]


async def check(bootstrap: str, namespace: str) -> list[str]:
    """Create the missing platform topics; return the lines to print (topics off their spec are
    also logged, as the services log them)."""
    created = await ensure_platform_topics(bootstrap, namespace)
    specs = {f"{namespace}{spec.name}": spec for spec in all_topic_specs()}
    async with _admin(bootstrap) as admin:
        found = {t["topic"]: len(t.get("partitions") or []) for t in await admin.describe_topics(list(specs))}
        off_spec = await configs_off_spec(admin, {name: spec.configs() for name, spec in specs.items() if spec.configs()})
    lines = []
    for name, spec in specs.items():
        want = "compact" if spec.compacted else "delete"
        problems = []
        if found.get(name) != spec.partitions:
            problems.append(f"{found.get(name)} partitions, spec {spec.partitions}")
        problems += [f"{key}={have}, spec {want}" for key, have, want in off_spec.get(name, [])]
        state = "created" if name in created else ("; ".join(problems) if problems else "ok")
        lines.append(f"{name:<45} {spec.partitions:>2} partitions  {want:<8} {state}")
    return lines


async def compact(bootstrap: str, namespace: str, name: str) -> str:
    if not _spec(name).compacted:
        raise SystemExit(f"yidi-topics: {name} is not a compacted topic in its spec")
    return await configure(bootstrap, namespace, name)


async def configure(bootstrap: str, namespace: str, name: str) -> str:
    """Set the configs ``name``'s spec sets (``TopicSpec.configs``) on the existing topic, keeping
    its other overrides."""
    wanted = _spec(name).configs()
    if not wanted:
        raise SystemExit(f"yidi-topics: {name}'s spec sets no config (its partitions are fixed by deleting it)")
    topic = f"{namespace}{name}"
    async with _admin(bootstrap) as admin:
        # AlterConfigs (aiokafka has no incremental one) replaces every setting of the topic: the
        # topic's own overrides (retention.ms, say) are sent again beside cleanup.policy.
        [described] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic, None)])
        [(code, message, _, _, entries)] = described.resources
        _refused(topic, code, message)
        overrides = {e[0]: e[1] for e in entries if e[3] == DYNAMIC_TOPIC_CONFIG and not e[4] and e[1] is not None}
        # A longer compaction lag an operator chose stays; every other config is set as the spec
        # says (compaction alone: "compact,delete" would drop a feed's records after retention).
        configs = overrides | {key: value for key, value in wanted.items()
                               if key != "min.compaction.lag.ms" or not on_spec(key, overrides.get(key, ""), value)}
        [response] = await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs)])
        [(code, message, *_)] = response.resources
        _refused(topic, code, message)
    return f"{topic}: " + ", ".join(f"{key}={configs[key]}" for key in wanted)


async def delete(bootstrap: str, namespace: str, name: str) -> str:
    _spec(name)
    topic = f"{namespace}{name}"
    async with _admin(bootstrap) as admin:
        if topic not in await admin.list_topics():
            raise SystemExit(f"yidi-topics: {topic} does not exist")
        await admin.delete_topics([topic])  # that name only
    return f"{topic}: deleted (start the services to create it again with its spec)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="yidi-topics", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", default=os.environ.get("YIDI_KAFKA_BOOTSTRAP", "127.0.0.1:19092"))
    parser.add_argument("--namespace", default=os.environ.get("YIDI_NAMESPACE", ""))
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="create what is missing; list each platform topic against its spec")
    for command in ("configure", "compact", "delete"):
        sub.add_parser(command).add_argument("topic", help="a platform topic's name, without the namespace")
    args = parser.parse_args(argv)
    if args.command == "check":
        lines = asyncio.run(check(args.bootstrap, args.namespace))
        print("\n".join(lines))
        sys.exit(0 if all(line.endswith(("ok", "created")) for line in lines) else 1)
    action = {"configure": configure, "compact": compact, "delete": delete}[args.command]
    print(asyncio.run(action(args.bootstrap, args.namespace, args.topic)))


if __name__ == "__main__":
    main()
