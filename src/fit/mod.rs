//! `fit`: the child that fills a size budget best, each unit of the model taken whole from
//! whichever parent gives the least estimated damage for its bytes, without quantizing.
//!
//! [`estimate`] measures every unit in every parent against a reference; [`knapsack`]
//! chooses within the budget; [`recipe_out`] writes the choice as an ordinary recipe, and
//! the child is planned from that recipe by [`crate::plan::build`], which checks the parents
//! as `splice` does. The budget is the whole child (headers, padding, every shard): the
//! header's size is read off the plan, and the data budget lowered until the plan fits.

pub mod constraint;
pub mod estimate;
pub mod knapsack;
pub mod recipe_out;

use std::path::Path;

use crate::ggml_lib::GgmlError;
use crate::mix::ImatrixError;
use crate::plan::{self, Parent, Plan, PlanError, SplitOptions};
use crate::recipe::{Recipe, RecipeError};
use crate::source::SourceError;
pub use estimate::{Candidate, Estimate, EstimateOptions, FitUnit};
use knapsack::Point;
pub use knapsack::Upgrade;

/// Upgrades listed after a fit.
pub const SHOWN_UPGRADES: usize = 5;
/// Rounds of lowering the data budget by what the plan's headers overshoot.
const MAX_ROUNDS: usize = 16;

/// Why a fit failed.
#[derive(Debug, thiserror::Error)]
pub enum FitError {
    /// No usable ggml was found (none, or one refused).
    #[error("fit compares dequantized values, which needs ggml's dequantizers: {0}")]
    Unavailable(crate::ggml_lib::GgmlError),
    /// No parent was given.
    #[error("fit needs at least one parent (--parent NAME=PATH)")]
    NoParents,
    /// `--reference` names no parent.
    #[error("--reference '{name}': no parent of that name (parents: {known})")]
    UnknownReference {
        /// The name given.
        name: String,
        /// The parents' names.
        known: String,
    },
    /// The reference cannot be read for a unit (missing, another shape, a type ggml cannot
    /// dequantize).
    #[error(
        "--reference '{reference}' cannot be compared for {unit}: it lacks it, has another shape, or a type ggml cannot dequantize; choose another reference or leave --reference out"
    )]
    ReferenceLacks {
        /// The reference.
        reference: String,
        /// The unit.
        unit: String,
    },
    /// No parent has a unit in a form that can be compared.
    #[error(
        "no parent has {unit} in the base's shape and a type ggml can dequantize: fit cannot choose it"
    )]
    NoCandidate {
        /// The unit.
        unit: String,
    },
    /// The budget is below the smallest child.
    #[error(
        "budget {budget} bytes is below the smallest child these parents make, {minimum} bytes: raise --budget to at least {minimum}"
    )]
    BudgetTooSmall {
        /// The budget.
        budget: u64,
        /// The smallest child's size, headers included.
        minimum: u64,
    },
    /// Reading a parent's rows failed.
    #[error("reading {tensor} of parent '{parent}': {source}")]
    Read {
        /// The parent.
        parent: String,
        /// The tensor (empty when opening the file failed).
        tensor: String,
        /// The error.
        source: SourceError,
    },
    /// ggml refused rows.
    #[error("dequantizing {tensor} of parent '{parent}': {source}")]
    Ggml {
        /// The parent.
        parent: String,
        /// The tensor.
        tensor: String,
        /// The error.
        source: GgmlError,
    },
    /// The importance matrix cannot be read.
    #[error(transparent)]
    Imatrix(#[from] ImatrixError),
    /// Planning the child failed (the parents do not fit together, ...).
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// A recipe did not parse: the `--recipe` constraint (or, a bug, the one fit wrote).
    #[error(transparent)]
    Recipe(#[from] RecipeError),
    /// A `--recipe` constraint rule fit cannot follow.
    #[error("{origin}: {what}")]
    BadConstraint {
        /// The rule (or file).
        origin: String,
        /// What is wrong, and what to write.
        what: String,
    },
}

/// What a fit is asked.
pub struct FitOptions<'a> {
    /// The whole child's size limit, in bytes.
    pub budget: u64,
    /// How errors are estimated.
    pub estimate: EstimateOptions<'a>,
    /// Where the child goes (the first shard's path when split).
    pub output: &'a Path,
    /// How it is cut into files.
    pub split: SplitOptions,
}

/// A fit's answer: the estimate, the choice, the recipe and the plan made from it.
pub struct Fitted<'p> {
    /// Every unit's candidates and errors.
    pub estimate: Estimate,
    /// For each unit, the index of the candidate taken.
    pub choice: Vec<usize>,
    /// The recipe text (what `--write-recipe` writes and the child records).
    pub recipe_text: String,
    /// The plan of the child.
    pub plan: Plan<'p>,
    /// The budget.
    pub budget: u64,
    /// The smallest child's size.
    pub minimum: u64,
    /// The best next steps up, each with what it costs and saves.
    pub upgrades: Vec<Upgrade>,
}

impl Fitted<'_> {
    /// Bytes of the child (every file).
    pub fn child_bytes(&self) -> u64 {
        self.plan.output_bytes()
    }

    /// The estimated error of the choice.
    pub fn error(&self) -> f64 {
        self.estimate
            .units
            .iter()
            .zip(&self.choice)
            .map(|(u, &c)| u.candidates[c].error)
            .sum()
    }

    /// The candidate unit `i` takes.
    pub fn chosen(&self, i: usize) -> &Candidate {
        &self.estimate.units[i].candidates[self.choice[i]]
    }
}

/// The file name recipes are parsed under (messages only; not recorded in the child).
const RECIPE_NAME: &str = "fit.toml";

/// One line on how the estimate was made, for the recipe's header.
fn describe(parents: &[Parent], opts: &EstimateOptions) -> String {
    format!(
        "squared error of dequantized values against {}, {}% of rows (bands of {}){}, times runs per token",
        match opts.reference {
            Some(r) => format!("'{r}'"),
            None => "the largest parent per unit".to_string(),
        },
        opts.sample * 100.0,
        estimate::BAND_ROWS,
        match opts.imatrix {
            Some(im) => format!(
                ", columns weighted by {}",
                im.path()
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ),
            None => String::new(),
        }
    ) + &format!(" ({} parents)", parents.len())
}

/// Fit a child of `parents` (the first is the base) into `opts.budget` bytes.
pub fn fit<'p>(parents: &'p [Parent], opts: &FitOptions) -> Result<Fitted<'p>, FitError> {
    // The parents are checked as splice checks them before a byte is read.
    plan::build(parents, &Recipe::default(), opts.output, opts.split)?;
    let est = estimate::estimate(parents, &opts.estimate)?;
    choose(parents, est, opts)
}

/// The second half of [`fit`]: choose within the budget from an estimate of `parents`,
/// write the recipe and plan the child from it.
pub fn choose<'p>(
    parents: &'p [Parent],
    est: Estimate,
    opts: &FitOptions,
) -> Result<Fitted<'p>, FitError> {
    let items: Vec<Vec<Point>> = est
        .units
        .iter()
        .map(|u| {
            u.candidates
                .iter()
                .map(|c| Point {
                    bytes: c.bytes,
                    error: c.error,
                })
                .collect()
        })
        .collect();
    let header_line = describe(parents, &opts.estimate);
    let header = recipe_out::Header {
        budget: opts.budget,
        estimate: &header_line,
    };
    let planned = |choice: &[usize]| -> Result<(String, Plan<'p>), FitError> {
        let text = recipe_out::recipe_text(parents, &est, choice, &header);
        let recipe = Recipe::from_toml(&text, Path::new(RECIPE_NAME))?;
        let plan = plan::build(parents, &recipe, opts.output, opts.split)?;
        Ok((text, plan))
    };
    let smallest: Vec<usize> = items
        .iter()
        .map(|p| knapsack::hull(p).first().copied().unwrap_or(0))
        .collect();
    let small = planned(&smallest)?;
    let minimum = small.1.output_bytes();
    if minimum > opts.budget {
        // The child's header records the budget (the recipe's comment, the record), so
        // the smallest child at a budget of `minimum` is a few bytes larger than at this
        // budget: say the size that budget really needs.
        let mut need = minimum;
        for _ in 0..4 {
            let header = recipe_out::Header {
                budget: need,
                estimate: &header_line,
            };
            let text = recipe_out::recipe_text(parents, &est, &smallest, &header);
            let recipe = Recipe::from_toml(&text, Path::new(RECIPE_NAME))?;
            let size = plan::build(parents, &recipe, opts.output, opts.split)?.output_bytes();
            if size <= need {
                break;
            }
            need = size;
        }
        return Err(FitError::BudgetTooSmall {
            budget: opts.budget,
            minimum: need,
        });
    }
    let data = |choice: &[usize]| knapsack::totals(&items, choice.to_vec()).bytes;
    let mut data_budget = opts.budget - (minimum - data(&smallest).min(minimum));
    let mut best = (smallest.clone(), small);
    for _ in 0..MAX_ROUNDS {
        let Ok(sol) = knapsack::solve(&items, data_budget) else {
            break;
        };
        let (text, plan) = planned(&sol.choice)?;
        let size = plan.output_bytes();
        if size <= opts.budget {
            best = (sol.choice, (text, plan));
            break;
        }
        // The headers (the recipe's text among them) grew: lower the data by as much.
        data_budget = data_budget.saturating_sub(size - opts.budget);
    }
    let (choice, (recipe_text, plan)) = best;
    let upgrades = knapsack::upgrades(&items, &choice, SHOWN_UPGRADES);
    Ok(Fitted {
        estimate: est,
        choice,
        recipe_text,
        plan,
        budget: opts.budget,
        minimum,
        upgrades,
    })
}

#[cfg(test)]
mod tests;
