using System.Diagnostics;
using System.Diagnostics.Metrics;
using System.Globalization;
using Patterns.Telemetry;

namespace Patterns.EventSourcing;

/// <summary>Event-sourcing spans and instruments, on the package's one <see cref="ActivitySource"/> and <see cref="Meter"/>.</summary>
internal static class EventSourcingTelemetry
{
    public const string StreamTag = "patterns.eventstore.stream";
    public const string EventCountTag = "patterns.eventstore.event_count";
    public const string SubscriptionTag = "patterns.subscription.name";
    public const string EventTypeTag = "patterns.eventstore.event_type";
    public const string PositionTag = "patterns.eventstore.position";

    public static readonly Counter<long> Appended = PatternsTelemetry.Meter.CreateCounter<long>(
        "patterns.eventstore.appended", "{event}", "Events appended to the event store.");

    public static readonly Histogram<double> AppendDuration = PatternsTelemetry.Meter.CreateHistogram<double>(
        "patterns.eventstore.append.duration", "s", "Time one append took, including serialization and inline projections.");

    public static readonly Counter<long> Conflicts = PatternsTelemetry.Meter.CreateCounter<long>(
        "patterns.eventstore.conflicts", "{append}", "Appends rejected because the stream was not at the expected version.");

    public static readonly Counter<long> Read = PatternsTelemetry.Meter.CreateCounter<long>(
        "patterns.eventstore.read", "{event}", "Events read and deserialized through the event store.");

    public static readonly Counter<long> Handled = PatternsTelemetry.Meter.CreateCounter<long>(
        "patterns.subscriptions.handled", "{event}", "Events handled by a subscription or async projection.");

    public static readonly Counter<long> Failed = PatternsTelemetry.Meter.CreateCounter<long>(
        "patterns.subscriptions.failed", "{event}", "Events a subscription's handler still failed on after its retries.");

    public static readonly Counter<long> Retried = PatternsTelemetry.Meter.CreateCounter<long>(
        "patterns.subscriptions.retried", "{attempt}", "Retry attempts of subscription handlers.");

    public static readonly Counter<long> Parked = PatternsTelemetry.Meter.CreateCounter<long>(
        "patterns.subscriptions.parked", "{event}", "Events set aside by a subscription whose failure mode is Park.");

    public static Activity? StartAppend(string streamId, int count)
    {
        if (!PatternsTelemetry.Source.HasListeners())
        {
            return null;
        }

        var activity = PatternsTelemetry.Source.StartActivity("eventstore.append", ActivityKind.Client);
        if (activity is { IsAllDataRequested: true })
        {
            activity.SetTag(StreamTag, streamId);
            activity.SetTag(EventCountTag, count);
        }

        return activity;
    }

    public static Activity? StartRead(string? streamId)
    {
        if (!PatternsTelemetry.Source.HasListeners())
        {
            return null;
        }

        var activity = PatternsTelemetry.Source.StartActivity(streamId is null ? "eventstore.read_all" : "eventstore.read_stream", ActivityKind.Client);
        if (streamId is not null && activity is { IsAllDataRequested: true })
        {
            activity.SetTag(StreamTag, streamId);
        }

        return activity;
    }

    public static Activity? StartHandle(string subscription, RecordedEvent @event)
    {
        if (!PatternsTelemetry.Source.HasListeners())
        {
            return null;
        }

        var activity = PatternsTelemetry.Source.StartActivity($"process {subscription}", ActivityKind.Consumer);
        if (activity is { IsAllDataRequested: true })
        {
            activity.SetTag(SubscriptionTag, subscription);
            activity.SetTag(StreamTag, @event.StreamId);
            activity.SetTag(EventTypeTag, @event.EventType);
            activity.SetTag(PositionTag, @event.Position.ToString(CultureInfo.InvariantCulture));
        }

        return activity;
    }

    public static TagList Tags(string subscription)
    {
        var tags = default(TagList);
        tags.Add(SubscriptionTag, subscription);
        return tags;
    }
}
