#!/usr/bin/env python3
"""An independent client of vmrd: grpcio (C-core) with its default channel,
knowing nothing of vmr's protos. Every message class comes from the
daemon's own reflection (grpcio-reflection, v1alpha), cross-checked through
reflection v1; health through grpcio-health-checking; metrics parsed with
prometheus_client's text parser. Each command prints JSON on stdout for the
Rust e2e tests (tests/tests/e2e/python_client.rs) to assert on.

    vmr_client.py probe SOCKET                 health, reflection, every method
    vmr_client.py import SOCKET NAME TAG SIZE  an ImportImage client stream
    vmr_client.py call SOCKET METHOD JSON      a unary call, request as JSON
    vmr_client.py watch SOCKET SINCE_NANOS [KEY=VALUE]...
                                               WatchEvents, one JSON line each
    vmr_client.py slow-watch SOCKET NAME COUNT a watcher that reads nothing
                                               while COUNT tags are made
    vmr_client.py bad SOCKET                   malformed and oversized requests
    vmr_client.py metrics URL                  the endpoint, parsed
"""

import json
import sys
import urllib.request

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

SERVICE = "vmregistry.v1.VMService"
REFLECTION_V1 = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
REFLECTION_V1ALPHA = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"


def channel(socket):
    # The default channel: no authority override, no options.
    return grpc.insecure_channel("unix://" + socket)


class Reflected:
    """VMService as reflection describes it."""

    def __init__(self, chan):
        self.chan = chan
        self.db = ProtoReflectionDescriptorDatabase(chan)
        self.pool = descriptor_pool.DescriptorPool(self.db)
        self.service = self.pool.FindServiceByName(SERVICE)

    def method(self, name):
        return self.service.methods_by_name[name]

    def cls(self, descriptor):
        return message_factory.GetMessageClass(descriptor)

    def stub(self, name):
        m = self.method(name)
        kind = {
            (False, False): self.chan.unary_unary,
            (True, False): self.chan.stream_unary,
            (False, True): self.chan.unary_stream,
            (True, True): self.chan.stream_stream,
        }[(m.client_streaming, m.server_streaming)]
        return kind(
            "/%s/%s" % (SERVICE, name),
            request_serializer=self.cls(m.input_type).SerializeToString,
            response_deserializer=self.cls(m.output_type).FromString,
        )

    def request(self, name, **fields):
        return self.cls(self.method(name).input_type)(**fields)


def to_dict(message):
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def raw_reflection(chan, path, requests):
    """Reflection without grpcio-reflection's client: v1 has v1alpha's
    messages on the wire under another service name."""
    call = chan.stream_stream(
        path,
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    return list(call(iter(requests), timeout=10))


def probe(socket):
    chan = channel(socket)
    health = health_pb2_grpc.HealthStub(chan)
    out = {
        "health": health_pb2.HealthCheckResponse.ServingStatus.Name(
            health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10).status
        ),
        "health_vmservice": health_pb2.HealthCheckResponse.ServingStatus.Name(
            health.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=10).status
        ),
    }
    reflected = Reflected(chan)
    out["services_v1alpha"] = sorted(reflected.db.get_services())
    listed = raw_reflection(
        chan, REFLECTION_V1, [reflection_pb2.ServerReflectionRequest(list_services="")]
    )
    out["services_v1"] = sorted(s.name for s in listed[0].list_services_response.service)
    # v1 serves the file that defines VMService, with every method in it.
    files = raw_reflection(
        chan,
        REFLECTION_V1,
        [reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE)],
    )
    v1_methods = []
    for raw in files[0].file_descriptor_response.file_descriptor_proto:
        proto = descriptor_pb2.FileDescriptorProto.FromString(raw)
        for service in proto.service:
            if "%s.%s" % (proto.package, service.name) == SERVICE:
                v1_methods = sorted(m.name for m in service.method)
    out["methods_v1"] = v1_methods
    methods = {}
    unresolved = []
    for m in reflected.service.methods:
        try:
            # Message classes for both ends, every field's type resolved.
            for descriptor in (m.input_type, m.output_type):
                reflected.cls(descriptor)
                for field in descriptor.fields:
                    if field.message_type is not None:
                        reflected.cls(field.message_type)
            methods[m.name] = [m.input_type.full_name, m.output_type.full_name]
        except Exception as e:  # noqa: BLE001 - reported, asserted on
            unresolved.append("%s: %s" % (m.name, e))
    out["methods"] = methods
    out["unresolved"] = unresolved
    out["list_images"] = to_dict(
        reflected.stub("ListImages")(reflected.request("ListImages"), timeout=10)
    )
    print(json.dumps(out))


def import_image(socket, name, tag, size):
    reflected = Reflected(channel(socket))
    size = int(size)
    vmfile = (
        "apiVersion: vmregistry.io/v1alpha1\n"
        "metadata:\n  name: %s\n"
        "spec:\n  diskImage: disk.raw\n  diskFormat: raw\n"
        "  resources:\n    cpu: 1\n    memory: 256MiB\n" % name
    )
    header_cls = reflected.cls(reflected.pool.FindMessageTypeByName("vmregistry.v1.ImportHeader"))

    def parts():
        yield reflected.request(
            "ImportImage",
            header=header_cls(vmfile=vmfile, tags=[tag], disk_size=size, disk_file_name="disk.raw"),
        )
        sent = 0
        while sent < size:
            n = min(64 * 1024, size - sent)
            yield reflected.request("ImportImage", chunk=bytes((sent + i) % 251 for i in range(n)))
            sent += n

    print(json.dumps(to_dict(reflected.stub("ImportImage")(parts(), timeout=60))))


def call(socket, method, request_json):
    reflected = Reflected(channel(socket))
    request = json_format.Parse(request_json, reflected.request(method))
    try:
        reply = reflected.stub(method)(request, timeout=30)
        print(json.dumps({"code": "OK", "reply": to_dict(reply)}))
    except grpc.RpcError as e:
        print(json.dumps({"code": e.code().name, "details": e.details()}))


def watch(socket, since_nanos, filters):
    reflected = Reflected(channel(socket))
    filter_cls = reflected.cls(reflected.pool.FindMessageTypeByName("vmregistry.v1.EventFilter"))
    request = reflected.request(
        "WatchEvents",
        since_unix_nanos=int(since_nanos),
        filters=[filter_cls(key=k, value=v) for k, v in (f.split("=", 1) for f in filters)],
    )
    for event in reflected.stub("WatchEvents")(request):
        print(json.dumps(to_dict(event)), flush=True)


def slow_watch(socket, name, count):
    """Opens a watch, makes COUNT tags of NAME:1 without reading it, then
    reads what the daemon kept for it."""
    count = int(count)
    # No window growth: the daemon must hold what this watcher does not read.
    chan = grpc.insecure_channel("unix://" + socket, options=[("grpc.http2.bdp_probe", 0)])
    reflected = Reflected(chan)
    request = reflected.request("WatchEvents")
    stream = reflected.stub("WatchEvents")(request)
    # The first tag proves the watch is subscribed: it is read before the rest.
    tag = reflected.stub("TagImage")
    tag(reflected.request("TagImage", source=name + ":1", target=name + ":t0"), timeout=10)
    first = next(stream)
    for i in range(1, count):
        tag(reflected.request("TagImage", source=name + ":1", target="%s:t%d" % (name, i)), timeout=10)
    seen, dropped, last = 0, 0, None
    for event in stream:
        if event.action == "dropped":
            dropped += event.dropped
            continue
        seen += 1
        last = event.name
        if event.name == "%s:t%d" % (name, count - 1):
            break
    stream.cancel()
    print(json.dumps({"first": first.name, "seen": seen, "dropped": dropped, "last": last}))


def status_of(fn):
    try:
        fn()
        return "OK"
    except grpc.RpcError as e:
        return e.code().name


def bad(socket):
    chan = channel(socket)
    raw = lambda path, kind: getattr(chan, kind)(  # noqa: E731
        path, request_serializer=lambda b: b, response_deserializer=lambda b: b
    )
    # Field 1 (host) as a length-delimited field running past the message's end.
    garbage = b"\x0a\x7f\x01"
    huge = reflection_pb2.ServerReflectionRequest(
        file_containing_symbol="x" * (1024 * 1024)
    ).SerializeToString()
    out = {}
    for version, path in (("v1", REFLECTION_V1), ("v1alpha", REFLECTION_V1ALPHA)):
        out["reflection_%s_malformed" % version] = status_of(
            lambda: list(raw(path, "stream_stream")(iter([garbage]), timeout=10))
        )
        out["reflection_%s_oversized" % version] = status_of(
            lambda: list(raw(path, "stream_stream")(iter([huge]), timeout=10))
        )
    events = "/%s/WatchEvents" % SERVICE
    out["events_malformed"] = status_of(
        lambda: list(raw(events, "unary_stream")(garbage, timeout=10))
    )
    reflected = Reflected(chan)
    filter_cls = reflected.cls(reflected.pool.FindMessageTypeByName("vmregistry.v1.EventFilter"))
    oversized = reflected.request(
        "WatchEvents", filters=[filter_cls(key="name", value="n" * (128 * 1024))]
    ).SerializeToString()
    out["events_oversized"] = status_of(
        lambda: list(raw(events, "unary_stream")(oversized, timeout=10))
    )
    many = reflected.request(
        "WatchEvents", filters=[filter_cls(key="type", value="vm") for _ in range(65)]
    )
    out["events_too_many_filters"] = status_of(
        lambda: next(iter(reflected.stub("WatchEvents")(many, timeout=10)))
    )
    unknown = reflected.request("WatchEvents", filters=[filter_cls(key="colour", value="red")])
    out["events_unknown_filter"] = status_of(
        lambda: next(iter(reflected.stub("WatchEvents")(unknown, timeout=10)))
    )
    # The daemon still answers afterwards.
    health = health_pb2_grpc.HealthStub(chan)
    out["health_after"] = health_pb2.HealthCheckResponse.ServingStatus.Name(
        health.Check(health_pb2.HealthCheckRequest(), timeout=10).status
    )
    print(json.dumps(out))


def metrics(url):
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=10) as reply:
        content_type = reply.headers.get("Content-Type", "")
        text = reply.read().decode()
    samples = {}
    types = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for s in family.samples:
            labels = ",".join("%s=%s" % kv for kv in sorted(s.labels.items()))
            samples["%s{%s}" % (s.name, labels) if labels else s.name] = s.value
    print(json.dumps({"content_type": content_type, "types": types, "samples": samples}))


def main(argv):
    commands = {
        "probe": probe,
        "import": import_image,
        "call": call,
        "watch": lambda socket, since, *filters: watch(socket, since, filters),
        "slow-watch": slow_watch,
        "bad": bad,
        "metrics": metrics,
    }
    if len(argv) < 2 or argv[1] not in commands:
        sys.exit(__doc__)
    commands[argv[1]](*argv[2:])


if __name__ == "__main__":
    main(sys.argv)
