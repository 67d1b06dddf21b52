"""Wire- and client-compatibility check between two versions of the contract.

Clients generate code from the `.proto` and keep running old builds for months,
so inside one package (`livecommerce.v1`) a change may only add. This module
compares two ``FileDescriptorSet`` values (the released baseline and the current
contract) and lists every change that would break an existing client:

- a message, enum, service or RPC removed or renamed;
- an RPC's request/response type or streaming kind changed;
- a field removed without both its number and its name in ``reserved``;
- a field number reused with another name, type or cardinality;
- an enum value removed without reserving it, or its number reused with another name;
- a number or name that the baseline reserved, used again.

Adding messages, fields, enum values and RPCs is allowed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from google.protobuf import descriptor_pb2 as d

PACKAGE = "livecommerce.v1"


@dataclass
class _Index:
    """Every message, enum and service of the package, by fully qualified name."""

    messages: dict[str, d.DescriptorProto] = field(default_factory=dict)
    enums: dict[str, d.EnumDescriptorProto] = field(default_factory=dict)
    services: dict[str, d.ServiceDescriptorProto] = field(default_factory=dict)


def _walk_messages(
    prefix: str, messages: Iterable[d.DescriptorProto]
) -> Iterator[tuple[str, d.DescriptorProto]]:
    for message in messages:
        name = f"{prefix}.{message.name}"
        yield name, message
        yield from _walk_messages(name, message.nested_type)


def _index(files: d.FileDescriptorSet, package: str) -> _Index:
    index = _Index()
    for file in files.file:
        if file.package != package:
            continue
        prefix = f".{file.package}"
        for enum in file.enum_type:
            index.enums[f"{prefix}.{enum.name}"] = enum
        for name, message in _walk_messages(prefix, file.message_type):
            index.messages[name] = message
            for enum in message.enum_type:
                index.enums[f"{name}.{enum.name}"] = enum
        for service in file.service:
            index.services[f"{prefix}.{service.name}"] = service
    return index


def _field_reserved(message: d.DescriptorProto, number: int) -> bool:
    # DescriptorProto.ReservedRange.end is exclusive.
    return any(r.start <= number < r.end for r in message.reserved_range)


def _enum_reserved(enum: d.EnumDescriptorProto, number: int) -> bool:
    # EnumDescriptorProto.EnumReservedRange.end is inclusive.
    return any(r.start <= number <= r.end for r in enum.reserved_range)


def _field_shape(f: d.FieldDescriptorProto) -> str:
    """Type and cardinality; proto3 `optional` (presence only) is wire-compatible."""
    kind = d.FieldDescriptorProto.Type.Name(f.type).removeprefix("TYPE_").lower()
    if f.type_name:
        kind = f.type_name.lstrip(".")
    return f"repeated {kind}" if f.label == d.FieldDescriptorProto.LABEL_REPEATED else kind


def _message_changes(name: str, old: d.DescriptorProto, new: d.DescriptorProto) -> list[str]:
    problems = []
    new_by_number = {f.number: f for f in new.field}
    for was in old.field:
        where = f"{name.lstrip('.')}.{was.name} (field {was.number})"
        now = new_by_number.get(was.number)
        if now is None:
            missing = []
            if not _field_reserved(new, was.number):
                missing.append(f"number {was.number}")
            if was.name not in new.reserved_name:
                missing.append(f'name "{was.name}"')
            if missing:
                problems.append(f"{where} removed without reserving its {' and '.join(missing)}")
            continue
        if now.name != was.name:
            problems.append(f'{where} renamed to "{now.name}"; the number is reused')
        if _field_shape(now) != _field_shape(was):
            problems.append(f"{where} changed type from {_field_shape(was)} to {_field_shape(now)}")
    for now in new.field:
        if _field_reserved(old, now.number) or now.name in old.reserved_name:
            problems.append(
                f"{name.lstrip('.')}.{now.name} (field {now.number}) reuses a number or "
                "name the baseline reserved"
            )
    return problems


def _enum_changes(name: str, old: d.EnumDescriptorProto, new: d.EnumDescriptorProto) -> list[str]:
    problems = []
    new_by_number = {v.number: v for v in new.value}
    for was in old.value:
        where = f"{name.lstrip('.')}.{was.name} (value {was.number})"
        now = new_by_number.get(was.number)
        if now is None:
            if not (_enum_reserved(new, was.number) and was.name in new.reserved_name):
                problems.append(f"{where} removed without reserving its number and name")
        elif now.name != was.name:
            problems.append(f'{where}: number reused by "{now.name}"')
    for now in new.value:
        if _enum_reserved(old, now.number) or now.name in old.reserved_name:
            problems.append(
                f"{name.lstrip('.')}.{now.name} (value {now.number}) reuses a number or "
                "name the baseline reserved"
            )
    return problems


def _service_changes(
    name: str, old: d.ServiceDescriptorProto, new: d.ServiceDescriptorProto
) -> list[str]:
    problems = []
    new_methods = {m.name: m for m in new.method}
    for was in old.method:
        where = f"rpc {name.lstrip('.')}.{was.name}"
        now = new_methods.get(was.name)
        if now is None:
            problems.append(f"{where} removed or renamed")
            continue
        if (now.input_type, now.output_type) != (was.input_type, was.output_type):
            problems.append(
                f"{where} changed signature from ({was.input_type}) -> {was.output_type} "
                f"to ({now.input_type}) -> {now.output_type}"
            )
        if (now.client_streaming, now.server_streaming) != (
            was.client_streaming,
            was.server_streaming,
        ):
            problems.append(f"{where} changed its streaming kind")
    return problems


def breaking_changes(
    baseline: d.FileDescriptorSet, current: d.FileDescriptorSet, package: str = PACKAGE
) -> list[str]:
    """Every change from ``baseline`` to ``current`` that breaks existing clients."""
    old, new = _index(baseline, package), _index(current, package)
    problems: list[str] = []
    for kind, old_items, new_items in (
        ("message", old.messages, new.messages),
        ("enum", old.enums, new.enums),
        ("service", old.services, new.services),
    ):
        for name in old_items.keys() - new_items.keys():
            problems.append(f"{kind} {name.lstrip('.')} removed or renamed")
    for name in old.messages.keys() & new.messages.keys():
        problems += _message_changes(name, old.messages[name], new.messages[name])
    for name in old.enums.keys() & new.enums.keys():
        problems += _enum_changes(name, old.enums[name], new.enums[name])
    for name in old.services.keys() & new.services.keys():
        problems += _service_changes(name, old.services[name], new.services[name])
    return sorted(problems)
