//! `fit`: the child that fills a size budget best, each unit of the model taken whole from
//! whichever parent gives the least estimated damage for its bytes, without quantizing.
//!
//! [`knapsack`] chooses; the estimate and the written recipe come in the modules beside it.

pub mod knapsack;
