"""ComfyUI's saved-workflow format (UI format, v0.4: ``nodes`` / ``links``): the rules that map
node definitions (``/object_info`` entries) to widget values, a validator and an API converter.

Used to build and check ``workflows/*.json`` offline and to run them through a real server.
No ComfyUI import: a definition is the JSON ``/object_info`` returns for a node type.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN"}
UI_ONLY_NODES = {"Note", "MarkdownNote", "PrimitiveNode", "Reroute"}
SEED_NAMES = {"seed", "noise_seed"}


def inputs_of(defn: Mapping[str, Any]) -> Iterator[tuple[str, list, bool]]:
    """(name, spec, required) for each input, required first, in declaration order."""
    for section, required in (("required", True), ("optional", False)):
        for name, spec in (defn["input"].get(section) or {}).items():
            yield name, list(spec), required


def is_widget(spec: list) -> bool:
    kind, options = spec[0], (spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {})
    return (isinstance(kind, list) or kind in WIDGET_TYPES) and not options.get("forceInput", False)


def widget_slots(defn: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The widget values a saved node carries, in order: ``(input name, role)`` where role is
    ``"value"`` or the frontend's companion widgets (``"control_after_generate"``, ``"upload"``)."""
    slots = []
    for name, spec, _ in inputs_of(defn):
        if not is_widget(spec):
            continue
        slots.append((name, "value"))
        options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
        if spec[0] == "INT" and (name in SEED_NAMES or options.get("control_after_generate")):
            slots.append((name, "control_after_generate"))
        if options.get("image_upload"):
            slots.append((name, "upload"))
    return slots


def input_type(spec: list) -> str:
    return "COMBO" if isinstance(spec[0], list) else spec[0]


def validate(workflow: Mapping[str, Any], defs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Every problem found (empty list = valid): unknown node types, links whose ends or types do
    not match the definitions, widget value counts, required inputs left unconnected."""
    problems: list[str] = []
    nodes = {n["id"]: n for n in workflow.get("nodes", [])}
    links = {l[0]: l for l in workflow.get("links", [])}
    for node in nodes.values():
        where = f"node {node['id']} ({node['type']})"
        if node["type"] in UI_ONLY_NODES:
            continue
        defn = defs.get(node["type"])
        if defn is None:
            problems.append(f"{where}: unknown node type")
            continue
        declared = {name: spec for name, spec, _ in inputs_of(defn)}
        expected = len(widget_slots(defn))
        got = len(node.get("widgets_values") or [])
        if got != expected:
            problems.append(f"{where}: {got} widget values, the definition has {expected}")
        connected = set()
        for inp in node.get("inputs") or []:
            if inp["name"] not in declared:
                problems.append(f"{where}: input {inp['name']!r} is not in the definition")
                continue
            if inp.get("link") is not None:
                connected.add(inp["name"])
                if inp["link"] not in links:
                    problems.append(f"{where}: input {inp['name']!r} uses missing link {inp['link']}")
        for name, spec, required in inputs_of(defn):
            if required and not is_widget(spec) and name not in connected:
                problems.append(f"{where}: required input {name!r} is not connected")
        outputs = defn["output"]
        for slot, out in enumerate(node.get("outputs") or []):
            if slot >= len(outputs) or out["type"] != outputs[slot]:
                problems.append(f"{where}: output {slot} is {out['type']!r}, the definition says {outputs[slot] if slot < len(outputs) else 'nothing'}")
    for link_id, src, src_slot, dst, dst_slot, kind in (l[:6] for l in links.values()):
        if src not in nodes or dst not in nodes:
            problems.append(f"link {link_id}: joins a missing node")
            continue
        s, d = nodes[src], nodes[dst]
        sdef, ddef = defs.get(s["type"]), defs.get(d["type"])
        if sdef is not None and (src_slot >= len(sdef["output"]) or sdef["output"][src_slot] != kind):
            problems.append(f"link {link_id}: {s['type']} output {src_slot} is not {kind}")
        if dst_slot >= len(d.get("inputs") or []) or d["inputs"][dst_slot].get("link") != link_id:
            problems.append(f"link {link_id}: {d['type']} input slot {dst_slot} does not point back to it")
        elif ddef is not None:
            name = d["inputs"][dst_slot]["name"]
            spec = {n: sp for n, sp, _ in inputs_of(ddef)}.get(name)
            if spec is not None and input_type(spec) != kind and not (input_type(spec) == "COMBO" and kind in ("COMBO", "*")):
                problems.append(f"link {link_id}: {d['type']}.{name} takes {input_type(spec)}, the link carries {kind}")
    return problems


def to_api(workflow: Mapping[str, Any], defs: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The API-format prompt (what ``POST /prompt`` takes) for a UI-format workflow."""
    links = {l[0]: l for l in workflow.get("links", [])}
    prompt: dict[str, dict[str, Any]] = {}
    for node in workflow["nodes"]:
        if node["type"] in UI_ONLY_NODES or node.get("mode", 0) in (2, 4):  # muted / bypassed
            continue
        defn = defs[node["type"]]
        values = list(node.get("widgets_values") or [])
        inputs: dict[str, Any] = {}
        for (name, role), value in zip(widget_slots(defn), values):
            if role == "value":
                inputs[name] = value
        for inp in node.get("inputs") or []:
            if inp.get("link") is not None:
                _, src, src_slot, *_ = links[inp["link"]]
                inputs[inp["name"]] = [str(src), src_slot]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


def definition_of(node_class: type) -> dict[str, Any]:
    """The ``/object_info``-style definition of a V1 node class (as JSON types)."""
    import json

    return json.loads(json.dumps({
        "input": node_class.INPUT_TYPES(),
        "output": list(node_class.RETURN_TYPES),
        "output_name": list(getattr(node_class, "RETURN_NAMES", node_class.RETURN_TYPES)),
        "category": getattr(node_class, "CATEGORY", ""),
    }))
