//! `lambda-local`: the two Lambda handlers run as plain processes, so that the crash campaign
//! (scripts/campaign.sh) can kill them at any moment, plus the few SQS/S3 chores the campaign
//! needs around them. The handlers and their wiring are the functions' own
//! (`ghevents_ingest::handler`, `ghevents_enrich::handler`); what Lambda itself does around
//! them is emulated here:
//!
//! - `ingest`: one invocation with a scheduled event (the EventBridge tick).
//! - `enrich`: the SQS event source mapping: receive up to 10 messages, invoke, delete the
//!   messages the handler did not report as failed; on an invocation error delete nothing.
//!
//! Configuration comes from the same environment variables as the functions (README).

use anyhow::{bail, Context, Result};
use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use aws_lambda_events::event::sqs::SqsEvent;
use aws_sdk_sqs::types::QueueAttributeName;
use clap::{Parser, Subcommand};
use ghevents_core::app::App;
use ghevents_core::aws::{init_tracing, s3_client, sqs_client, LambdaEnv};
use ghevents_core::clock::SystemClock;
use ghevents_core::config::Config;
use lambda_runtime::{Context as LambdaContext, LambdaEvent};
use std::collections::HashSet;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "lambda-local")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// One invocation of the ingest function (outbox flush, then one cycle).
    Ingest,
    /// The enrich function behind an SQS event source mapping on ENRICH_QUEUE_URL.
    Enrich {
        /// Stop after this many batches.
        #[arg(long, default_value_t = 1000)]
        batches: u32,
        /// Stop after this many empty receives in a row (1 s long polls).
        #[arg(long, default_value_t = 2)]
        idle: u32,
    },
    /// Create the bucket, a dead-letter queue and the queue redriving to it; print their URLs.
    Setup {
        #[arg(long)]
        bucket: String,
        #[arg(long)]
        queue: String,
        #[arg(long, default_value_t = 20)]
        visibility: u32,
        #[arg(long, default_value_t = 5)]
        max_receive: u32,
    },
    /// Send `{"push_id": N}` messages, one per id, in the order given (repeats allowed).
    Send {
        #[arg(long)]
        queue_url: String,
        ids: Vec<i64>,
    },
    /// Move every message of one queue (the DLQ) to another.
    Redrive {
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
    },
    /// Receive every visible message, print their push ids, and make them visible again.
    Peek {
        #[arg(long)]
        queue_url: String,
    },
    /// Approximate message counts of a queue (visible, in flight).
    Count {
        #[arg(long)]
        queue_url: String,
    },
    /// Save every object of a bucket and every visible message of the queues under DIR.
    Save {
        #[arg(long)]
        bucket: String,
        #[arg(long = "queue-url")]
        queues: Vec<String>,
        dir: std::path::PathBuf,
    },
    /// Put back what `save` wrote (queues by position, given in the same order).
    Restore {
        #[arg(long)]
        bucket: String,
        #[arg(long = "queue-url")]
        queues: Vec<String>,
        dir: std::path::PathBuf,
    },
    /// Read back the raw bytes of every stored event (S3 or inline) and check their ids.
    VerifyRaw,
}

#[tokio::main]
async fn main() -> ExitCode {
    let _failpoints = ghevents_core::failpoints::setup();
    let cli = Cli::parse();
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("lambda-local: configuration: {e}");
            return ExitCode::from(2);
        }
    };
    init_tracing(config.log_format);
    match run(cli, config).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("lambda-local: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, config: Config) -> Result<ExitCode> {
    let sdk = ghevents_core::aws::sdk_config().await;
    let sqs = sqs_client(&sdk);
    let s3 = s3_client(&sdk);
    match cli.command {
        Command::Ingest => ingest(config).await,
        Command::Enrich { batches, idle } => enrich(config, batches, idle).await,
        Command::Setup {
            bucket,
            queue,
            visibility,
            max_receive,
        } => {
            s3.create_bucket().bucket(&bucket).send().await?;
            let dlq = sqs
                .create_queue()
                .queue_name(format!("{queue}-dlq"))
                .send()
                .await?
                .queue_url
                .context("DLQ URL")?;
            let dlq_arn = queue_arn(&sqs, &dlq).await?;
            let policy = serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive.to_string()});
            let url = sqs
                .create_queue()
                .queue_name(&queue)
                .attributes(
                    QueueAttributeName::VisibilityTimeout,
                    visibility.to_string(),
                )
                .attributes(QueueAttributeName::RedrivePolicy, policy.to_string())
                .send()
                .await?
                .queue_url
                .context("queue URL")?;
            let arn = queue_arn(&sqs, &url).await?;
            println!(
                "{}",
                serde_json::json!({"queue_url": url, "queue_arn": arn, "dlq_url": dlq})
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Send { queue_url, ids } => {
            for id in &ids {
                sqs.send_message()
                    .queue_url(&queue_url)
                    .message_body(ghevents_core::aws::sqs::message_body(*id))
                    .send()
                    .await?;
            }
            println!("{}", serde_json::json!({"sent": ids.len()}));
            Ok(ExitCode::SUCCESS)
        }
        Command::Redrive { from, to } => {
            let msgs = receive_all(&sqs, &from, 60).await?;
            for (_, body, receipt) in &msgs {
                sqs.send_message()
                    .queue_url(&to)
                    .message_body(body)
                    .send()
                    .await?;
                sqs.delete_message()
                    .queue_url(&from)
                    .receipt_handle(receipt)
                    .send()
                    .await?;
            }
            println!("{}", serde_json::json!({"moved": msgs.len()}));
            Ok(ExitCode::SUCCESS)
        }
        Command::Peek { queue_url } => {
            let msgs = receive_all(&sqs, &queue_url, 60).await?;
            let ids: Vec<serde_json::Value> = msgs
                .iter()
                .map(
                    |(_, body, _)| match ghevents_core::aws::sqs::push_id_of(body) {
                        Some(id) => id.into(),
                        None => body.clone().into(),
                    },
                )
                .collect();
            for (_, _, receipt) in &msgs {
                sqs.change_message_visibility()
                    .queue_url(&queue_url)
                    .receipt_handle(receipt)
                    .visibility_timeout(0)
                    .send()
                    .await?;
            }
            println!("{}", serde_json::json!({"push_ids": ids}));
            Ok(ExitCode::SUCCESS)
        }
        Command::Count { queue_url } => {
            let a = sqs
                .get_queue_attributes()
                .queue_url(&queue_url)
                .attribute_names(QueueAttributeName::All)
                .send()
                .await?;
            let get = |k: QueueAttributeName| -> i64 {
                a.attributes()
                    .and_then(|m| m.get(&k))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(-1)
            };
            println!(
                "{}",
                serde_json::json!({
                    "visible": get(QueueAttributeName::ApproximateNumberOfMessages),
                    "in_flight": get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
                    "delayed": get(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
                })
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Save {
            bucket,
            queues,
            dir,
        } => {
            std::fs::create_dir_all(dir.join("objects"))?;
            let mut objects = 0;
            let mut pages = s3.list_objects_v2().bucket(&bucket).into_paginator().send();
            let mut keys = Vec::new();
            while let Some(page) = pages.next().await {
                for o in page?.contents() {
                    if let Some(k) = o.key() {
                        keys.push(k.to_string());
                    }
                }
            }
            let mut index = Vec::new();
            for key in keys {
                let body = s3.get_object().bucket(&bucket).key(&key).send().await?;
                let bytes = body.body.collect().await?.into_bytes();
                let file = format!("{objects}.bin");
                std::fs::write(dir.join("objects").join(&file), &bytes)?;
                index.push(serde_json::json!({"key": key, "file": file}));
                objects += 1;
            }
            let mut messages = Vec::new();
            for q in &queues {
                // Taken off the queue, in flight ones included (returned or postponed messages
                // become visible within seconds): the restore puts them back on the new one.
                let msgs = receive_everything(&sqs, q, Duration::from_secs(60)).await?;
                messages.push(
                    msgs.iter()
                        .map(|(_, body, _)| body.clone())
                        .collect::<Vec<_>>(),
                );
            }
            std::fs::write(
                dir.join("index.json"),
                serde_json::to_vec(&serde_json::json!({"objects": index, "messages": messages}))?,
            )?;
            let counts: Vec<usize> = messages.iter().map(Vec::len).collect();
            println!(
                "{}",
                serde_json::json!({"objects": objects, "messages": counts})
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Restore {
            bucket,
            queues,
            dir,
        } => {
            let index: serde_json::Value =
                serde_json::from_slice(&std::fs::read(dir.join("index.json"))?)?;
            let mut objects = 0;
            for o in index["objects"].as_array().into_iter().flatten() {
                let bytes = std::fs::read(
                    dir.join("objects")
                        .join(o["file"].as_str().context("file")?),
                )?;
                s3.put_object()
                    .bucket(&bucket)
                    .key(o["key"].as_str().context("key")?)
                    .body(bytes.into())
                    .send()
                    .await?;
                objects += 1;
            }
            let mut counts = Vec::new();
            for (q, bodies) in queues
                .iter()
                .zip(index["messages"].as_array().into_iter().flatten())
            {
                let mut n = 0;
                for b in bodies.as_array().into_iter().flatten() {
                    sqs.send_message()
                        .queue_url(q)
                        .message_body(b.as_str().context("body")?)
                        .send()
                        .await?;
                    n += 1;
                }
                counts.push(n);
            }
            println!(
                "{}",
                serde_json::json!({"objects": objects, "messages": counts})
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::VerifyRaw => verify_raw(config, s3).await,
    }
}

async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<String> {
    sqs.get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await?
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .context("queue ARN")
}

/// Every visible message (id, body, receipt handle), each received once and left invisible
/// for `hide` seconds.
async fn receive_all(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    hide: i32,
) -> Result<Vec<(String, String, String)>> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut empty = 0;
    while empty < 2 {
        let r = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .visibility_timeout(hide)
            .wait_time_seconds(1)
            .send()
            .await?;
        let msgs = r.messages();
        if msgs.is_empty() {
            empty += 1;
            continue;
        }
        empty = 0;
        for m in msgs {
            let id = m.message_id().unwrap_or_default().to_string();
            if seen.insert(id.clone()) {
                out.push((
                    id,
                    m.body().unwrap_or_default().to_string(),
                    m.receipt_handle().unwrap_or_default().to_string(),
                ));
            }
        }
    }
    Ok(out)
}

/// Every message of the queue, waiting (up to `patience`) for those in flight to come back,
/// each left invisible for 10 minutes.
async fn receive_everything(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    patience: Duration,
) -> Result<Vec<(String, String, String)>> {
    let started = std::time::Instant::now();
    let mut out: Vec<(String, String, String)> = Vec::new();
    let mut seen = HashSet::new();
    loop {
        for m in receive_all(sqs, url, 600).await? {
            if seen.insert(m.0.clone()) {
                out.push(m);
            }
        }
        let a = sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::All)
            .send()
            .await?;
        let get = |k: QueueAttributeName| -> usize {
            a.attributes()
                .and_then(|m| m.get(&k))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let visible = get(QueueAttributeName::ApproximateNumberOfMessages);
        let in_flight = get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible);
        if (visible == 0 && in_flight <= out.len()) || started.elapsed() >= patience {
            if in_flight > out.len() {
                eprintln!(
                    "lambda-local: {} messages still in flight after {patience:?}",
                    in_flight - out.len()
                );
            }
            return Ok(out);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn app(env: &LambdaEnv, pool_size: usize) -> Result<App> {
    App::start(env.config.clone(), Arc::new(SystemClock), pool_size)
        .await
        .context("connecting to Postgres")
}

async fn ingest(config: Config) -> Result<ExitCode> {
    let env = LambdaEnv::from_config(config).await.context("secrets")?;
    let app = app(&env, 3).await?;
    let queue = env.push_queue();
    let (_keep_running, stop) = tokio::sync::watch::channel(false);
    let deps = ghevents_ingest::Deps {
        cycle: app.ingestor(env.raw_store(), queue.clone(), stop),
        outbox: queue.map(|queue| ghevents_ingest::Outbox {
            pool: app.pool.clone(),
            queue,
            limit: ghevents_ingest::OUTBOX_FLUSH_LIMIT,
            requeue_after: ghevents_core::outbox::REQUEUE_AFTER,
        }),
        clock: app.clock.clone(),
        metrics: Arc::new(ghevents_ingest::Stdout),
        function_name: "ingest".into(),
    };
    let payload: EventBridgeEvent = serde_json::from_value(serde_json::json!({
        "version": "0", "id": "campaign", "detail-type": "Scheduled Event",
        "source": "aws.events", "account": "000000000000",
        "time": chrono_now(), "region": "us-east-1", "resources": [], "detail": {}
    }))?;
    match ghevents_ingest::handler(&deps, LambdaEvent::new(payload, LambdaContext::default())).await
    {
        Ok(r) => {
            println!(
                "{}",
                serde_json::json!({"ok": true, "outcome": r.outcome, "outbox_sent": r.outbox_sent, "new_events": r.summary.new_events})
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            let retryable = e.is_retryable();
            println!(
                "{}",
                serde_json::json!({"ok": false, "retryable": retryable, "error": e.to_string()})
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

fn chrono_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    // RFC 3339 from epoch seconds without another dependency: EventBridge's own format.
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

async fn enrich(config: Config, batches: u32, idle: u32) -> Result<ExitCode> {
    let env = LambdaEnv::from_config(config).await.context("secrets")?;
    let Some(queue_url) = env.config.enrich_queue_url.clone() else {
        bail!("ENRICH_QUEUE_URL is not set");
    };
    let app = app(&env, 4).await?;
    let sqs = sqs_client(&env.sdk);
    let arn = queue_arn(&sqs, &queue_url).await?;
    let deps = ghevents_enrich::Deps {
        enricher: app.enricher(),
        clock: app.clock.clone(),
        metrics: Arc::new(ghevents_core::metrics::Stdout),
        function_name: "enrich".into(),
    };
    let (mut done, mut empty, mut failed_invocations) = (0u32, 0u32, 0u32);
    let (mut acked, mut returned) = (0usize, 0usize);
    while done < batches && empty < idle {
        let r = sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await?;
        let msgs = r.messages();
        if msgs.is_empty() {
            empty += 1;
            continue;
        }
        empty = 0;
        done += 1;
        let records: Vec<serde_json::Value> = msgs
            .iter()
            .map(|m| {
                serde_json::json!({
                    "messageId": m.message_id(), "receiptHandle": m.receipt_handle(),
                    "body": m.body(), "md5OfBody": m.md5_of_body(), "attributes": {},
                    "messageAttributes": {}, "eventSource": "aws:sqs",
                    "eventSourceARN": arn, "awsRegion": "us-east-1"
                })
            })
            .collect();
        let event: SqsEvent = serde_json::from_value(serde_json::json!({ "Records": records }))?;
        let result = tokio::time::timeout(
            Duration::from_secs(120),
            ghevents_enrich::handler(&deps, LambdaEvent::new(event, LambdaContext::default())),
        )
        .await;
        match result {
            Ok(Ok(resp)) => {
                let failed: HashSet<String> = resp
                    .batch_item_failures
                    .iter()
                    .map(|f| f.item_identifier.clone())
                    .collect();
                for m in msgs {
                    if failed.contains(m.message_id().unwrap_or_default()) {
                        returned += 1;
                        continue;
                    }
                    if let Some(h) = m.receipt_handle() {
                        sqs.delete_message()
                            .queue_url(&queue_url)
                            .receipt_handle(h)
                            .send()
                            .await?;
                        acked += 1;
                    }
                }
            }
            Ok(Err(e)) => {
                failed_invocations += 1;
                returned += msgs.len();
                eprintln!("lambda-local: enrich invocation failed: {e}");
            }
            Err(_) => {
                failed_invocations += 1;
                returned += msgs.len();
                eprintln!("lambda-local: enrich invocation timed out (120 s)");
            }
        }
    }
    println!(
        "{}",
        serde_json::json!({"batches": done, "acked": acked, "returned": returned, "failed_invocations": failed_invocations})
    );
    Ok(ExitCode::SUCCESS)
}

async fn verify_raw(config: Config, s3: aws_sdk_s3::Client) -> Result<ExitCode> {
    let env = LambdaEnv::from_config(config).await.context("secrets")?;
    let pool = ghevents_core::app::pool(&env.config, &ghevents_core::store::PoolOptions::new(4))?;
    let objects = env
        .config
        .raw_payload_bucket
        .clone()
        .map(|bucket| ghevents_core::aws::s3::S3Objects { client: s3, bucket });
    let client = pool.get().await?;
    let ids: Vec<i64> = client
        .query("SELECT event_id FROM github_events ORDER BY event_id", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    drop(client);
    let (mut ok, mut unreadable, mut mismatched) = (0u64, Vec::new(), Vec::new());
    for id in ids {
        let reader = objects
            .as_ref()
            .map(|o| o as &dyn ghevents_core::raw::ObjectReader);
        match ghevents_core::raw::read_raw(&pool, reader, id).await {
            Ok(bytes) => {
                let v: Option<serde_json::Value> = serde_json::from_slice(&bytes).ok();
                let got = v.as_ref().and_then(|v| v["id"].as_str()).map(str::to_owned);
                // A line holding a lone surrogate is not valid UTF-8 JSON for serde: look for
                // the id's bytes instead.
                let needle = format!("\"id\":\"{id}\"");
                let matches = got.as_deref() == Some(id.to_string().as_str())
                    || (got.is_none()
                        && bytes.windows(needle.len()).any(|w| w == needle.as_bytes()));
                if matches {
                    ok += 1;
                } else {
                    mismatched.push(id);
                }
            }
            Err(e) => unreadable.push(serde_json::json!({"event_id": id, "error": e.to_string()})),
        }
    }
    println!(
        "{}",
        serde_json::json!({"ok": ok, "unreadable": unreadable, "mismatched": mismatched})
    );
    Ok(ExitCode::SUCCESS)
}
