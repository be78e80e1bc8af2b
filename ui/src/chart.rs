//! The chart region: banner, problems, medications, allergies, vital-sign trends, labs with
//! reference ranges, encounters, and the clinical notes.

use crate::schedule::modality_label;
use crate::{error_notice, Load};
use hearth_ipc::{Chart, LabFlag, LabResult, NoteRow, VitalPoint, VitalSeries};
use yew::prelude::*;

#[derive(Properties, PartialEq)]
pub struct ChartProps {
    pub chart: Option<Load<Chart>>,
}

#[function_component(ChartView)]
pub fn chart_view(props: &ChartProps) -> Html {
    let body = match &props.chart {
        None => html! {
            <>
                <h2 id="chart-heading">{ "Chart" }</h2>
                <p class="muted">{ "Select a visit to open the patient's chart." }</p>
            </>
        },
        Some(Load::Loading) => html! {
            <>
                <h2 id="chart-heading">{ "Chart" }</h2>
                <p class="muted">{ "Opening chart…" }</p>
            </>
        },
        Some(Load::Failed(e)) => html! {
            <>
                <h2 id="chart-heading">{ "Chart" }</h2>
                { error_notice(e) }
            </>
        },
        Some(Load::Ready(c)) => chart(c),
    };
    html! { <>{ body }</> }
}

fn chart(c: &Chart) -> Html {
    let b = &c.banner;
    let facts = [
        b.age_years.map(|a| format!("{a} y")),
        b.sex.clone(),
        b.birth_date.as_ref().map(|d| format!("DOB {d}")),
        b.mrn.as_ref().map(|m| format!("MRN {m}")),
    ];
    html! {
        <>
            <div class="banner" id="patient-banner" data-patient-id={b.patient_id.clone()}>
                <h2 id="chart-heading"><span id="chart-patient-name">{ &b.name }</span></h2>
                <p class="facts">{ facts.iter().flatten().cloned().collect::<Vec<_>>().join(" · ") }</p>
                if b.allergy_summary.is_empty() {
                    <p class="allergies none">{ "No known allergies" }</p>
                } else {
                    <p class="allergies">{ format!("Allergies: {}", b.allergy_summary.join(", ")) }</p>
                }
            </div>
            if !c.data_issues.is_empty() {
                <div class="notice warn" role="status">
                    { format!("{} record(s) could not be shown: ", c.data_issues.len()) }
                    { c.data_issues.join("; ") }
                </div>
            }
            <div class="chart-grid">
                <section class="card" aria-labelledby="problems-h">
                    <h3 id="problems-h">{ "Problems" }</h3>
                    <ul>{ for c.problems.iter().map(|p| html! {
                        <li>{ &p.display }
                            if let Some(code) = &p.code { <span class="code">{ format!(" {code}") }</span> }
                        </li>
                    }) }</ul>
                </section>
                <section class="card" aria-labelledby="meds-h">
                    <h3 id="meds-h">{ "Medications" }</h3>
                    <ul>{ for c.medications.iter().map(|m| html! {
                        <li>{ &m.display }
                            if let Some(d) = &m.dosage { <span class="muted">{ format!(" — {d}") }</span> }
                        </li>
                    }) }</ul>
                </section>
                <section class="card" aria-labelledby="allergies-h">
                    <h3 id="allergies-h">{ "Allergies" }</h3>
                    if c.allergies.is_empty() { <p class="muted">{ "None recorded" }</p> }
                    <ul>{ for c.allergies.iter().map(|a| html! {
                        <li>{ &a.substance }
                            if let Some(r) = &a.reaction { <span class="muted">{ format!(" — {r}") }</span> }
                            if a.criticality.as_deref() == Some("high") { <span class="badge high">{ "High risk" }</span> }
                        </li>
                    }) }</ul>
                </section>
            </div>
            <section class="card" aria-labelledby="vitals-h">
                <h3 id="vitals-h">{ "Vital signs" }</h3>
                <div class="vitals">{ for c.vitals.iter().map(vital) }</div>
            </section>
            <section class="card" aria-labelledby="labs-h">
                <h3 id="labs-h">{ "Recent labs" }</h3>
                <table class="labs">
                    <thead><tr><th scope="col">{ "Date" }</th><th scope="col">{ "Test" }</th><th scope="col">{ "Result" }</th><th scope="col">{ "Reference" }</th></tr></thead>
                    <tbody>{ for c.labs.iter().take(21).map(lab) }</tbody>
                </table>
            </section>
            <section class="card" aria-labelledby="enc-h">
                <h3 id="enc-h">{ "Encounters" }</h3>
                <table class="encounters">
                    <thead><tr><th scope="col">{ "Date" }</th><th scope="col">{ "Kind" }</th><th scope="col">{ "Reason" }</th></tr></thead>
                    <tbody>{ for c.encounters.iter().take(12).map(|e| html! {
                        <tr>
                            <td>{ &e.date }</td>
                            <td>{ &e.kind }<span class={classes!("badge", modality_label(e.modality).1)}>{ modality_label(e.modality).0 }</span></td>
                            <td>{ e.reason.clone().unwrap_or_default() }</td>
                        </tr>
                    }) }</tbody>
                </table>
            </section>
            <section class="card" aria-labelledby="notes-h">
                <h3 id="notes-h">{ "Notes" }</h3>
                if c.notes.is_empty() {
                    <p class="muted" id="chart-notes-none">{ "No notes." }</p>
                } else {
                    <ul id="chart-notes" class="chart-notes">
                        { for c.notes.iter().enumerate().map(|(i, n)| note_row(i, n)) }
                    </ul>
                }
            </section>
        </>
    }
}

/// One note of the chart: when, what, who, where it stands, and its text as written.
fn note_row(index: usize, n: &NoteRow) -> Html {
    // A date, or the date of an RFC 3339 instant.
    let date = n.date.split('T').next().unwrap_or(&n.date).to_string();
    html! {
        <li class="chart-note" data-document-id={n.document_id.clone()}>
            <div class="chart-note-head">
                <span class="chart-note-date">{ date }</span>
                <strong class="chart-note-title">{ format!(" {}", n.title) }</strong>
                if let Some(author) = &n.author {
                    <span class="muted">{ format!(" · {author}") }</span>
                }
                <span class="badge note-status">{ &n.status }</span>
            </div>
            if let Some(text) = &n.text {
                <NoteText id={format!("chart-note-text-{index}")} text={text.clone()} />
            } else {
                <p class="muted small">{ "No readable text in this note." }</p>
            }
        </li>
    }
}

/// Longer than this (characters or lines), a note's text shows its start until expanded.
const LONG_NOTE_CHARS: usize = 600;
const LONG_NOTE_LINES: usize = 10;

#[derive(Properties, PartialEq)]
struct NoteTextProps {
    id: AttrValue,
    text: AttrValue,
}

/// A note's text with its line breaks; a long one is collapsed behind "Show all".
#[function_component(NoteText)]
fn note_text(props: &NoteTextProps) -> Html {
    let expanded = use_state(|| false);
    let long = props.text.chars().count() > LONG_NOTE_CHARS
        || props.text.lines().count() > LONG_NOTE_LINES;
    let toggle = {
        let expanded = expanded.clone();
        Callback::from(move |_: MouseEvent| expanded.set(!*expanded))
    };
    let collapsed = long && !*expanded;
    html! {
        <>
            <div id={props.id.clone()} class={classes!("note-text", collapsed.then_some("collapsed"))}>{ props.text.clone() }</div>
            if long {
                <button type="button" class="note-toggle" aria-expanded={(*expanded).to_string()}
                    aria-controls={props.id.clone()} onclick={toggle}>
                    { if *expanded { "Show less" } else { "Show all" } }
                </button>
            }
        </>
    }
}

fn vital(s: &VitalSeries) -> Html {
    let latest = s.points.last();
    html! {
        <div class="vital">
            <span class="label">{ &s.label }</span>
            <span class="value">
                { latest.map(|p| format!("{} {}", p.value, s.unit)).unwrap_or_default() }
            </span>
            { sparkline(&s.points, &s.label) }
            <span class="muted small">{ latest.map(|p| p.date.clone()).unwrap_or_default() }</span>
        </div>
    }
}

/// A trend line of the values, oldest on the left.
fn sparkline(points: &[VitalPoint], label: &str) -> Html {
    const W: f64 = 160.0;
    const H: f64 = 36.0;
    if points.len() < 2 {
        return html! {};
    }
    let (min, max) = points.iter().fold((f64::MAX, f64::MIN), |(lo, hi), p| {
        (lo.min(p.value), hi.max(p.value))
    });
    let span = if max > min { max - min } else { 1.0 };
    let step = W / (points.len() - 1) as f64;
    let coords = points
        .iter()
        .enumerate()
        .map(|(i, p)| {
            format!(
                "{:.1},{:.1}",
                i as f64 * step,
                H - 2.0 - (p.value - min) / span * (H - 4.0)
            )
        })
        .collect::<Vec<_>>()
        .join(" ");
    let aria = format!(
        "{label} trend over {} measurements, from {min} to {max}",
        points.len()
    );
    html! {
        <svg class="spark" viewBox={format!("0 0 {W} {H}")} role="img" aria-label={aria}>
            <polyline points={coords} />
        </svg>
    }
}

fn lab(l: &LabResult) -> Html {
    let (flag, class) = match l.flag {
        Some(LabFlag::High) => ("H", "high"),
        Some(LabFlag::Low) => ("L", "low"),
        _ => ("", "normal"),
    };
    let range = match (l.range_low, l.range_high) {
        (Some(lo), Some(hi)) => format!("{lo}–{hi} {}", l.unit),
        (None, Some(hi)) => format!("≤ {hi} {}", l.unit),
        (Some(lo), None) => format!("≥ {lo} {}", l.unit),
        (None, None) => String::new(),
    };
    html! {
        <tr class={class}>
            <td>{ &l.date }</td>
            <td>{ &l.name }</td>
            <td class="result">{ format!("{}{} {}", l.comparator.as_deref().unwrap_or_default(), l.value, l.unit) }
                if !flag.is_empty() { <span class={classes!("flag", class)} aria-label={format!("flagged {class}")}>{ flag }</span> }
            </td>
            <td class="muted">{ range }</td>
        </tr>
    }
}
