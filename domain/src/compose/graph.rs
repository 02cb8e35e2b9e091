//! The services' dependency graph: cycle detection that names the cycle
//! (`a -> b -> a`) and the grouping of services into start levels.

use std::collections::BTreeMap;

use super::PlannedService;
use crate::validation::ValidationError;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mark {
    Unvisited,
    InProgress,
    Done,
}

/// Groups services into levels (a service's level is one more than the
/// highest level of its dependencies), each sorted by name. Fails on a
/// dependency cycle. Dependencies must already name existing services.
pub(super) fn levels(
    services: BTreeMap<String, PlannedService>,
) -> Result<Vec<Vec<PlannedService>>, ValidationError> {
    let edges: BTreeMap<&str, Vec<&str>> = services
        .iter()
        .map(|(k, s)| {
            (
                k.as_str(),
                s.depends_on.iter().map(|d| d.service.as_str()).collect(),
            )
        })
        .collect();
    let mut marks: BTreeMap<&str, Mark> = edges.keys().map(|k| (*k, Mark::Unvisited)).collect();
    let mut level: BTreeMap<&str, usize> = BTreeMap::new();
    for start in edges.keys() {
        let mut stack = Vec::new();
        visit(start, &edges, &mut marks, &mut level, &mut stack)?;
    }
    let level: BTreeMap<String, usize> =
        level.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    let depth = level.values().max().map_or(0, |m| m + 1);
    let mut out: Vec<Vec<PlannedService>> = vec![Vec::new(); depth];
    // BTreeMap iteration is by name, so each level comes out sorted.
    for (key, service) in services {
        out[level[&key]].push(service);
    }
    Ok(out)
}

/// Depth-first search that computes levels and reports the first cycle met.
fn visit<'a>(
    node: &'a str,
    edges: &BTreeMap<&'a str, Vec<&'a str>>,
    marks: &mut BTreeMap<&'a str, Mark>,
    level: &mut BTreeMap<&'a str, usize>,
    stack: &mut Vec<&'a str>,
) -> Result<usize, ValidationError> {
    match marks.get(node).copied().unwrap_or(Mark::Done) {
        Mark::Done => return Ok(level.get(node).copied().unwrap_or(0)),
        Mark::InProgress => {
            let from = stack.iter().position(|n| *n == node).unwrap_or(0);
            let mut cycle: Vec<&str> = stack[from..].to_vec();
            cycle.push(node);
            return Err(ValidationError::new(
                format!("services.{node}.dependsOn"),
                format!("dependency cycle: {}", cycle.join(" -> ")),
            ));
        }
        Mark::Unvisited => {}
    }
    marks.insert(node, Mark::InProgress);
    stack.push(node);
    let mut mine = 0;
    for dep in edges.get(node).map(Vec::as_slice).unwrap_or_default() {
        mine = mine.max(visit(dep, edges, marks, level, stack)? + 1);
    }
    stack.pop();
    marks.insert(node, Mark::Done);
    level.insert(node, mine);
    Ok(mine)
}
