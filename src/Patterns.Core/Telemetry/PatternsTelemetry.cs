using System.Diagnostics;
using System.Diagnostics.Metrics;
using System.Globalization;
using Patterns.Messaging;

namespace Patterns.Telemetry;

/// <summary>The package's one <see cref="ActivitySource"/> and one <see cref="Meter"/>, and the instruments on it.</summary>
internal static class PatternsTelemetry
{
    private static readonly string Version =
        typeof(PatternsTelemetry).Assembly.GetName().Version?.ToString(3) ?? "0.0.0";

    public static readonly ActivitySource Source = new(PatternsDiagnostics.ActivitySourceName, Version);

    public static readonly Meter Meter = new(PatternsDiagnostics.MeterName, Version);

    public static readonly Counter<long> Sent = Meter.CreateCounter<long>(
        "messaging.client.sent.messages", "{message}", "Messages sent or published.");

    public static readonly Counter<long> Consumed = Meter.CreateCounter<long>(
        "messaging.client.consumed.messages", "{message}", "Messages handled successfully by a consumer.");

    public static readonly Histogram<double> ProcessDuration = Meter.CreateHistogram<double>(
        "messaging.process.duration", "s", "Time spent handling one message, including in-process retries.");

    public static readonly Histogram<double> OperationDuration = Meter.CreateHistogram<double>(
        "messaging.client.operation.duration", "s", "Time a request-response call took, end to end.");

    public static readonly Counter<long> Failed = Meter.CreateCounter<long>(
        "patterns.messages.failed", "{message}", "Deliveries that failed after in-process retries, and messages rejected as malformed or of an unknown type.");

    public static readonly Counter<long> Retried = Meter.CreateCounter<long>(
        "patterns.messages.retried", "{message}", "In-process retry attempts and messages handed back to the transport for redelivery.");

    public static readonly Counter<long> DeadLettered = Meter.CreateCounter<long>(
        "patterns.messages.dead_lettered", "{message}", "Messages moved to a dead-letter queue.");

    public static readonly Counter<long> Unrouted = Meter.CreateCounter<long>(
        "patterns.messages.unrouted", "{message}", "Messages published to a topic with no subscription (a no-op).");

    public static readonly Counter<long> Dropped = Meter.CreateCounter<long>(
        "patterns.messages.dropped", "{message}", "In-process messages not handled because a drain deadline passed.");

    public static Activity? StartSend(string system, string operation, string destination, ref Envelope envelope)
    {
        if (!Source.HasListeners())
        {
            return null;
        }

        var activity = Source.StartActivity($"{operation} {destination}", ActivityKind.Producer);
        if (activity is null)
        {
            return null;
        }

        if (activity.IsAllDataRequested)
        {
            activity.SetTag(TelemetryTags.System, system);
            activity.SetTag(TelemetryTags.OperationName, operation);
            activity.SetTag(TelemetryTags.OperationType, "send");
            activity.SetTag(TelemetryTags.Destination, destination);
            activity.SetTag(TelemetryTags.MessageId, envelope.MessageId.ToString());
            if (envelope.CorrelationId is { } correlation)
            {
                activity.SetTag(TelemetryTags.ConversationId, correlation.ToString());
            }
        }

        envelope = envelope.WithTrace(activity.Id, activity.TraceStateString);
        return activity;
    }

    public static Activity? StartProcess(string system, string destination, string consumerGroup, in Envelope envelope)
    {
        if (!Source.HasListeners())
        {
            return null;
        }

        ActivityContext parent = default;
        ActivityLink[]? links = null;
        if (envelope.TraceParent is { } traceParent
            && ActivityContext.TryParse(traceParent, envelope.TraceState, isRemote: true, out parent))
        {
            links = [new ActivityLink(parent)];
        }

        var activity = Source.StartActivity(ActivityKind.Consumer, parent, links: links, name: $"process {destination}");
        if (activity is { IsAllDataRequested: true })
        {
            activity.SetTag(TelemetryTags.System, system);
            activity.SetTag(TelemetryTags.OperationName, "process");
            activity.SetTag(TelemetryTags.OperationType, "process");
            activity.SetTag(TelemetryTags.Destination, destination);
            activity.SetTag(TelemetryTags.ConsumerGroup, consumerGroup);
            activity.SetTag(TelemetryTags.MessageId, envelope.MessageId.ToString());
            activity.SetTag(TelemetryTags.DeliveryCount, envelope.DeliveryCount.ToString(CultureInfo.InvariantCulture));
        }

        return activity;
    }

    public static void RecordError(Activity? activity, Exception exception)
    {
        if (activity is null)
        {
            return;
        }

        activity.SetStatus(ActivityStatusCode.Error, exception.Message);
        activity.SetTag(TelemetryTags.ErrorType, exception.GetType().FullName);
        activity.AddException(exception);
    }

    public static TagList Tags(string system, string destination)
    {
        var tags = default(TagList);
        tags.Add(TelemetryTags.System, system);
        tags.Add(TelemetryTags.Destination, destination);
        return tags;
    }

    public static TagList Tags(string system, string destination, string consumerGroup)
    {
        var tags = Tags(system, destination);
        tags.Add(TelemetryTags.ConsumerGroup, consumerGroup);
        return tags;
    }
}
