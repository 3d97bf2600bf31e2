// SCG tab: "Send hint to txt2img/img2img ControlNet" (A1111 + sd-webui-controlnet, Forge).
// Neither host has a Python API that fills another tab's ControlNet unit, so the hint image is
// handed to the first unit's upload input the way a user's file drop would be.
function scgSendHintToControlNet(tab) {
    const root = typeof gradioApp === "function" ? gradioApp() : document;
    const hint = root.querySelector("#scg_hint img");
    if (!hint || !hint.src) {
        alert("SCG: upload an image first; its hint is what gets sent.");
        return [];
    }
    // sd-webui-controlnet names the first unit ControlNet-0, or ControlNet when there is only one.
    const unit = [`${tab}_controlnet_ControlNet-0`, `${tab}_controlnet_ControlNet`]
        .find((id) => root.querySelector(`#${id}_input_image input[type=file]`));
    // Forge: its ControlNet canvas has random element ids; take the first canvas upload input
    // inside a ControlNet block of that tab.
    const forge = [...root.querySelectorAll(`#tab_${tab} input.forge-file-upload`)]
        .find((el) => el.closest('[id*="controlnet" i]'));
    const input = unit ? root.querySelector(`#${unit}_input_image input[type=file]`) : forge;
    if (!input) {
        alert(`SCG: no ControlNet unit image input found in ${tab}; open its ControlNet section once, or pick ` +
              'the "scg_hypercolumn" preprocessor in a unit, or use Generate in this tab.');
        return [];
    }
    fetch(hint.src).then((r) => r.blob()).then((blob) => {
        const files = new DataTransfer();
        files.items.add(new File([blob], "scg_hint.png", {type: "image/png"}));
        input.files = files.files;
        input.dispatchEvent(new Event("change", {bubbles: true}));
        const enable = unit && root.querySelector(`#${unit}_controlnet_enable_checkbox input`);
        if (enable && !enable.checked) enable.click();
        const go = window[`switch_to_${tab}`];
        if (typeof go === "function") go();
    });
    return [];
}
