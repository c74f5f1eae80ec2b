using Patterns.Orchestration.Engine;
using Patterns.Orchestration.History;

namespace Patterns.Orchestration.Runtime;

internal sealed partial class WorkflowRuntime
{
    /// <summary>Applies an activity's outcome to its instance; completes once it is committed (then the result message is acknowledged).</summary>
    public async Task DeliverResultAsync(ActivityResult result, CancellationToken cancellationToken)
    {
        var e = result.Error is null
            ? new HistoryEvent { Kind = HistoryEventKind.ActivityCompleted, Seq = result.Seq, Payload = result.Result }
            : new HistoryEvent { Kind = HistoryEventKind.ActivityFailed, Seq = result.Seq, Error = result.Error, ErrorType = result.ErrorType };
        try
        {
            await Enqueue(result.InstanceId, new EventItem(e) { Run = result.Run, Retried = result.Retried }).WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is NonDeterminismException or WorkflowDeterminismException)
        {
            // The instance is faulted (and says so in its status); resuming it re-sends this activity.
        }
    }

    /// <summary>Applies a correlated message as a signal, once per message id.</summary>
    public Task DeliverMessageAsync<TMessage>(string instanceId, TMessage message, Guid messageId, CancellationToken cancellationToken)
        where TMessage : notnull
    {
        var payload = _serializer.ToPayload(message, typeof(object));
        var e = new HistoryEvent { Kind = HistoryEventKind.SignalReceived, Name = MessageSignals.NameOf(typeof(TMessage)), Payload = payload, Id = messageId.ToString("N") };
        return Enqueue(instanceId, new EventItem(e)).WaitAsync(cancellationToken);
    }
}
