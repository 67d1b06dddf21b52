"""The contract stays compatible with the last release, and the checker catches breaks."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2 as d

import service.generated.livecommerce.v1 as generated
from tests.protos.compat import breaking_changes

ROOT = Path(__file__).resolve().parents[2]
BASELINE = ROOT / "protos" / "livecommerce" / "v1" / "descriptor_baseline.binpb"


def load_baseline() -> d.FileDescriptorSet:
    files = d.FileDescriptorSet()
    files.ParseFromString(BASELINE.read_bytes())
    return files


def current_descriptors() -> d.FileDescriptorSet:
    """The contract as the committed generated code sees it (what the server runs)."""
    files = d.FileDescriptorSet()
    for module in pkgutil.iter_modules(generated.__path__):
        if module.name.endswith("_pb2"):
            pb2 = importlib.import_module(f"{generated.__name__}.{module.name}")
            pb2.DESCRIPTOR.CopyToProto(files.file.add())
    return files


def test_current_contract_is_compatible_with_the_baseline() -> None:
    problems = breaking_changes(load_baseline(), current_descriptors())

    assert problems == [], "breaking changes (see protos/README.md):\n" + "\n".join(problems)


def test_baseline_holds_the_service() -> None:
    # Guards against comparing two empty sets (wrong package, empty baseline).
    (file,) = [f for f in load_baseline().file if f.package == "livecommerce.v1"]
    (service,) = file.service
    assert service.name == "LiveRecommender"
    assert len(service.method) == 6
    assert len(file.message_type) > 20


# --- the checker itself ------------------------------------------------------------

Mutation = Callable[[d.FileDescriptorProto], None]


def _message(file: d.FileDescriptorProto, name: str) -> d.DescriptorProto:
    return next(m for m in file.message_type if m.name == name)


def _enum(file: d.FileDescriptorProto, name: str) -> d.EnumDescriptorProto:
    return next(e for e in file.enum_type if e.name == name)


def _field(message: d.DescriptorProto, name: str) -> d.FieldDescriptorProto:
    return next(f for f in message.field if f.name == name)


def _remove_field(file: d.FileDescriptorProto, message: str, name: str) -> int:
    msg = _message(file, message)
    doomed = _field(msg, name)
    msg.field.remove(doomed)
    return doomed.number


def _reserve(file: d.FileDescriptorProto, message: str, number: int, name: str | None) -> None:
    msg = _message(file, message)
    msg.reserved_range.add(start=number, end=number + 1)
    if name is not None:
        msg.reserved_name.append(name)


def _method(file: d.FileDescriptorProto, name: str) -> d.MethodDescriptorProto:
    return next(m for m in file.service[0].method if m.name == name)


def remove_field(file: d.FileDescriptorProto) -> None:
    _remove_field(file, "ViewerScore", "probability")


def remove_field_reserving_number_only(file: d.FileDescriptorProto) -> None:
    number = _remove_field(file, "ViewerScore", "probability")
    _reserve(file, "ViewerScore", number, None)


def rename_field(file: d.FileDescriptorProto) -> None:
    _field(_message(file, "ViewerScore"), "probability").name = "p_buy"


def retype_field(file: d.FileDescriptorProto) -> None:
    _field(_message(file, "ViewerScore"), "probability").type = d.FieldDescriptorProto.TYPE_FLOAT


def make_field_singular(file: d.FileDescriptorProto) -> None:
    field = _field(_message(file, "ScoreConversionRequest"), "viewer_ids")
    field.label = d.FieldDescriptorProto.LABEL_OPTIONAL


def reuse_field_number(file: d.FileDescriptorProto) -> None:
    number = _remove_field(file, "RankProductsRequest", "top_k")
    _message(file, "RankProductsRequest").field.add(
        name="limit", number=number, type=d.FieldDescriptorProto.TYPE_INT64
    )


def remove_message(file: d.FileDescriptorProto) -> None:
    file.message_type.remove(_message(file, "Money"))


def rename_message(file: d.FileDescriptorProto) -> None:
    _message(file, "Money").name = "Price"


def remove_rpc(file: d.FileDescriptorProto) -> None:
    file.service[0].method.remove(_method(file, "RankProducts"))


def rename_rpc(file: d.FileDescriptorProto) -> None:
    _method(file, "RankProducts").name = "RankItems"


def change_rpc_request(file: d.FileDescriptorProto) -> None:
    _method(file, "PublishEvents").input_type = ".livecommerce.v1.LiveEvent"


def change_streaming(file: d.FileDescriptorProto) -> None:
    _method(file, "IngestEvents").client_streaming = False


def rename_service(file: d.FileDescriptorProto) -> None:
    file.service[0].name = "Recommender"


def reuse_enum_number(file: d.FileDescriptorProto) -> None:
    value = next(v for v in _enum(file, "Segment").value if v.number == 2)
    value.name = "SEGMENT_BROWSER"


def remove_enum_value(file: d.FileDescriptorProto) -> None:
    enum = _enum(file, "PaymentMethod")
    enum.value.remove(next(v for v in enum.value if v.name == "PAYMENT_METHOD_COD"))


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (remove_field, "ViewerScore.probability (field 2) removed without reserving"),
        (remove_field_reserving_number_only, 'reserving its name "probability"'),
        (rename_field, 'ViewerScore.probability (field 2) renamed to "p_buy"'),
        (retype_field, "changed type from double to float"),
        (make_field_singular, "changed type from repeated string to string"),
        (reuse_field_number, "RankProductsRequest.top_k (field 4) renamed"),
        (remove_message, "message livecommerce.v1.Money removed"),
        (rename_message, "message livecommerce.v1.Money removed or renamed"),
        (remove_rpc, "rpc livecommerce.v1.LiveRecommender.RankProducts removed"),
        (rename_rpc, "rpc livecommerce.v1.LiveRecommender.RankProducts removed or renamed"),
        (change_rpc_request, "PublishEvents changed signature"),
        (change_streaming, "IngestEvents changed its streaming kind"),
        (rename_service, "service livecommerce.v1.LiveRecommender removed"),
        (reuse_enum_number, 'Segment.SEGMENT_HIGH_POTENTIAL (value 2): number reused by "SEGMENT_'),
        (remove_enum_value, "PaymentMethod.PAYMENT_METHOD_COD (value 3) removed"),
    ],
)
def test_checker_reports_breaking_change(mutate: Mutation, expected: str) -> None:
    baseline = current_descriptors()
    mutated = d.FileDescriptorSet()
    mutated.CopyFrom(baseline)
    mutate(mutated.file[0])

    problems = breaking_changes(baseline, mutated)

    assert any(expected in p for p in problems), problems


def add_field(file: d.FileDescriptorProto) -> None:
    _message(file, "ViewerScore").field.add(
        name="rank", number=99, type=d.FieldDescriptorProto.TYPE_INT32
    )


def add_message_rpc_and_enum_value(file: d.FileDescriptorProto) -> None:
    file.message_type.add(name="PingRequest")
    file.service[0].method.add(
        name="Ping", input_type=".livecommerce.v1.PingRequest", output_type=".livecommerce.v1.Money"
    )
    _enum(file, "Segment").value.add(name="SEGMENT_LAPSED", number=4)


def remove_field_reserving_number_and_name(file: d.FileDescriptorProto) -> None:
    number = _remove_field(file, "ViewerScore", "probability")
    _reserve(file, "ViewerScore", number, "probability")


def remove_enum_value_reserving_it(file: d.FileDescriptorProto) -> None:
    enum = _enum(file, "PaymentMethod")
    enum.value.remove(next(v for v in enum.value if v.number == 3))
    enum.reserved_range.add(start=3, end=3)
    enum.reserved_name.append("PAYMENT_METHOD_COD")


@pytest.mark.parametrize(
    "mutate",
    [
        add_field,
        add_message_rpc_and_enum_value,
        remove_field_reserving_number_and_name,
        remove_enum_value_reserving_it,
    ],
)
def test_checker_allows_compatible_change(mutate: Mutation) -> None:
    baseline = current_descriptors()
    changed = d.FileDescriptorSet()
    changed.CopyFrom(baseline)
    mutate(changed.file[0])

    assert breaking_changes(baseline, changed) == []


def test_checker_reports_reuse_of_a_reserved_number() -> None:
    baseline = current_descriptors()
    remove_field_reserving_number_and_name(baseline.file[0])
    reused = d.FileDescriptorSet()
    reused.CopyFrom(baseline)
    msg = _message(reused.file[0], "ViewerScore")
    del msg.reserved_range[:]
    del msg.reserved_name[:]
    msg.field.add(name="p_buy", number=2, type=d.FieldDescriptorProto.TYPE_DOUBLE)

    problems = breaking_changes(baseline, reused)

    assert problems == [
        "livecommerce.v1.ViewerScore.p_buy (field 2) reuses a number or name the baseline reserved"
    ]
