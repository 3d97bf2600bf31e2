// SCG nodes: show the node's `info` text on the node itself after a run.
//
// Modular AE Encode (hypercolumn) and SCG ControlNet Apply return it as their ui.text (which groups
// and modules made the hint, at what size, and whether the groups match the ControlNet's SCG
// metadata). ComfyUI's frontends do not display ui.text on their own, so this read-only box does.
// The box is never part of the prompt (the server ignores it, caching is unaffected) nor of saved
// workflows. It is loaded by ComfyUI from WEB_DIRECTORY (see ../__init__.py); the A1111 extension's
// own script lives in ../javascript/.
import { app } from "../../scripts/app.js";

const NODE_TYPES = new Set(["SCGModularAEEncode", "SCGControlNetApply"]);
const WIDGET_NAME = "scg_info";
const PLACEHOLDER = "SCG info: what the hint was made from appears here after a run";

function show(el, text) {
	el.value = text ?? "";
	el.title = el.value;
	const warning = /WARNING/.test(el.value);
	el.dataset.scgWarning = warning ? "1" : "0";
	el.style.color = warning ? "#ffb347" : "";
	el.style.borderColor = warning ? "#d9822b" : "";
}

function addInfoWidget(node) {
	const existing = node.widgets?.find((w) => w.name === WIDGET_NAME);
	if (existing) return existing;
	const el = document.createElement("textarea");
	el.className = "comfy-multiline-input scg-info";
	el.readOnly = true;
	el.rows = 3;
	el.placeholder = PLACEHOLDER;
	el.style.opacity = "0.9";
	el.style.fontSize = "11px";
	const widget = node.addDOMWidget(WIDGET_NAME, "scg_info", el, {
		getValue: () => el.value,
		setValue: (v) => show(el, v),
		getMinHeight: () => 54,
		getMaxHeight: () => 140,
		serialize: false, // not sent with the prompt
	});
	widget.serialize = false; // not saved in the workflow (current frontend)
	widget.inputEl = el;
	return widget;
}

app.registerExtension({
	name: "scg.nodes.info",
	async beforeRegisterNodeDef(nodeType, nodeData) {
		if (!NODE_TYPES.has(nodeData?.name)) return;

		const onNodeCreated = nodeType.prototype.onNodeCreated;
		nodeType.prototype.onNodeCreated = function () {
			const r = onNodeCreated?.apply(this, arguments);
			addInfoWidget(this);
			const wanted = this.computeSize();
			this.setSize([Math.max(this.size[0], wanted[0]), Math.max(this.size[1], wanted[1])]);
			return r;
		};

		const onExecuted = nodeType.prototype.onExecuted;
		nodeType.prototype.onExecuted = function (output) {
			onExecuted?.apply(this, arguments);
			const text = output?.text;
			if (text == null) return;
			addInfoWidget(this).value = Array.isArray(text) ? text.join("\n") : String(text);
			this.setDirtyCanvas?.(true, true);
		};

		// The frontend of 2024 saves every widget's value; leave this box out so that a saved workflow
		// has exactly the widget values the node defines.
		const onSerialize = nodeType.prototype.onSerialize;
		nodeType.prototype.onSerialize = function (o) {
			onSerialize?.apply(this, arguments);
			const i = this.widgets?.findIndex((w) => w.name === WIDGET_NAME) ?? -1;
			if (i >= 0 && Array.isArray(o?.widgets_values) && o.widgets_values.length > i) {
				o.widgets_values.splice(i, 1);
			}
		};
	},
});
