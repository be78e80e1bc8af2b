//! Keyboard navigation between the three regions: F6 / Shift+F6 cycle (the platform
//! convention for panes), Alt+1 / Alt+2 / Alt+3 jump to schedule / chart / visit.

use gloo_events::EventListener;
use wasm_bindgen::JsCast;
use web_sys::{HtmlElement, KeyboardEvent};
use yew::prelude::*;

pub const REGIONS: [&str; 3] = ["region-schedule", "region-chart", "region-visit"];

fn document() -> Option<web_sys::Document> {
    web_sys::window()?.document()
}

/// Moves focus to the region with `id`.
pub fn focus_region(id: &str) {
    if let Some(el) = document()
        .and_then(|d| d.get_element_by_id(id))
        .and_then(|e| e.dyn_into::<HtmlElement>().ok())
    {
        // Focus can only fail on a detached element; nothing else to do then.
        let _ = el.focus();
    }
}

/// The region that holds the focus, if any.
fn current_region() -> Option<usize> {
    let active = document()?.active_element()?;
    REGIONS
        .iter()
        .position(|id| matches!(active.closest(&format!("#{id}")), Ok(Some(_))))
}

fn on_key(e: &KeyboardEvent) {
    let target = match (e.key().as_str(), e.alt_key(), e.shift_key()) {
        ("F6", false, shift) => {
            let n = REGIONS.len();
            Some(match (current_region(), shift) {
                (None, false) => 0,
                (None, true) => n - 1,
                (Some(i), false) => (i + 1) % n,
                (Some(i), true) => (i + n - 1) % n,
            })
        }
        ("1", true, _) => Some(0),
        ("2", true, _) => Some(1),
        ("3", true, _) => Some(2),
        _ => None,
    };
    if let Some(i) = target {
        e.prevent_default();
        focus_region(REGIONS[i]);
    }
}

/// Installs the region shortcuts for the lifetime of the calling component.
#[hook]
pub fn use_region_keys() {
    use_effect_with((), |_| {
        let listener = document().map(|d| {
            EventListener::new(&d, "keydown", |e| {
                if let Some(e) = e.dyn_ref::<KeyboardEvent>() {
                    on_key(e);
                }
            })
        });
        move || drop(listener)
    });
}
