// SCG tab: "Send hint to txt2img/img2img ControlNet" (A1111 + sd-webui-controlnet, Forge).
//
// The extension sets the first ControlNet unit's image, preprocessor and model from Python
// (scripts/scg_webui/ui.py); this script first makes that unit visible — switches to the tab, opens
// the ControlNet section and Unit 0, ticks Enable, and in img2img ticks "Upload independent control
// image" (which clears the unit's image, so it must happen before the hint arrives) — because an
// image set while its canvas is hidden is never drawn. scgSendHintToControlNet is the fallback for hosts whose
// ControlNet UI the extension does not know: it drops the hint on the unit's upload input.

function scgRoot() {
    return typeof gradioApp === "function" ? gradioApp() : document;
}

function scgVisible(el) {
    return !!el && el.offsetParent !== null && el.getBoundingClientRect().width > 0;
}

async function scgWaitFor(condition, timeoutMs = 5000) {
    const start = Date.now();
    while (!condition()) {
        if (Date.now() - start > timeoutMs) return false;
        await new Promise((resolve) => setTimeout(resolve, 50));
    }
    await new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
    return true;
}

// The first ControlNet unit's block in `tab`: its "Enable" checkbox's unit panel.
function scgFirstUnit(tab) {
    const root = scgRoot();
    const enable = root.querySelector(`#${tab}_controlnet_ControlNet-0_controlnet_enable_checkbox, ` +
                                      `#${tab}_controlnet_ControlNet_controlnet_enable_checkbox`);
    return enable ? enable.id.replace(/_controlnet_enable_checkbox$/, "") : null;
}

// Switch to `tab`, open its ControlNet section and Unit 0 (and tick "Upload independent control
// image" in img2img); resolves once the unit's image area is on screen. Returns false when the
// tab has no ControlNet unit.
async function scgPrepareControlNet(tab) {
    const root = scgRoot();
    const go = window[`switch_to_${tab}`];
    if (typeof go === "function") go();
    const unit = scgFirstUnit(tab);
    if (!unit) return false;
    const section = root.querySelector(`#${tab}_controlnet`);
    await scgWaitFor(() => scgVisible(section));  // the tab switch lands a frame or two later
    const enable = root.querySelector(`#${unit}_controlnet_enable_checkbox`);
    if (section && !scgVisible(enable)) {
        // a gradio accordion: its header toggles it (gradio 3: div.label-wrap, gradio 4: button.label-wrap)
        const header = section.querySelector(".label-wrap");
        if (header) header.click();
        await scgWaitFor(() => scgVisible(enable));
    }
    // Unit 0: a tab (sd-webui-controlnet) or an accordion of its own (Forge)
    const unitAccordion = enable?.closest(".input-accordion");
    const unitHeader = unitAccordion?.querySelector(".label-wrap");
    if (unitHeader && !unitHeader.classList.contains("open")) unitHeader.click();
    const unitTab = [...root.querySelectorAll(`#${tab}_controlnet button`)]
        .find((b) => /^ControlNet Unit 0\b/.test(b.textContent.trim()));
    if (!unitAccordion && unitTab && !unitTab.classList.contains("selected")) unitTab.click();
    await scgWaitFor(() => scgVisible(enable));
    // ticked as a user would, so that the hosts' own scripts (unit headers, active-unit badges) follow
    const enableBox = enable?.querySelector("input");
    if (enableBox && !enableBox.checked) enableBox.click();
    const independent = root.querySelector(`#${unit}_controlnet_same_img2img_checkbox input`);
    if (independent && !independent.checked) independent.click();
    const image = root.querySelector(`#${unit}_input_image`);
    await scgWaitFor(() => scgVisible(image));
    image?.scrollIntoView({block: "center"});
    return true;
}

// Runs before the Python side of the send buttons: prepares the unit, passes the inputs on.
async function scgSendToControlNet(tab, ...inputs) {
    const hint = scgRoot().querySelector("#scg_hint img");
    if (!hint || !hint.src) {
        alert("SCG: upload an image first; its hint is what gets sent.");
        return inputs;
    }
    if (!(await scgPrepareControlNet(tab))) {
        alert(`SCG: no ControlNet unit found in ${tab}; is the ControlNet extension enabled?`);
    }
    return inputs;
}

// Fallback (a host UI the extension does not know): drop the hint on the unit's upload input.
function scgSendHintToControlNet(tab) {
    const root = scgRoot();
    const hint = root.querySelector("#scg_hint img");
    if (!hint || !hint.src) {
        alert("SCG: upload an image first; its hint is what gets sent.");
        return [];
    }
    // sd-webui-controlnet names the first unit ControlNet-0, or ControlNet when there is only one
    const unit = [`${tab}_controlnet_ControlNet-0`, `${tab}_controlnet_ControlNet`]
        .find((id) => root.querySelector(`#${id}_input_image input[type=file]`));
    const forge = [...root.querySelectorAll(`#tab_${tab} input.forge-file-upload`)]
        .find((el) => el.closest('[id*="controlnet" i]'));
    const input = unit ? root.querySelector(`#${unit}_input_image input[type=file]`) : forge;
    if (!input) {
        alert(`SCG: no ControlNet unit image input found in ${tab}; open its ControlNet section once, or pick ` +
              'the "scg_hypercolumn" preprocessor in a unit, or use Generate in this tab.');
        return [];
    }
    scgPrepareControlNet(tab).then(() => fetch(hint.src)).then((r) => r.blob()).then((blob) => {
        const files = new DataTransfer();
        files.items.add(new File([blob], "scg_hint.png", {type: "image/png"}));
        input.files = files.files;
        input.dispatchEvent(new Event("change", {bubbles: true}));
        const enable = unit && root.querySelector(`#${unit}_controlnet_enable_checkbox input`);
        if (enable && !enable.checked) enable.click();
    });
    return [];
}
