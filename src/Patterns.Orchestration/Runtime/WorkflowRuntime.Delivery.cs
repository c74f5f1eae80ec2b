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
        ThrowIfStopped("the result of an activity", result.InstanceId);
        try
        {
            await Enqueue(result.InstanceId, new EventItem(e) { Run = result.Run, Retried = result.Retried }).WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is NonDeterminismException or WorkflowDeterminismException)
        {
            // The instance is faulted (and says so in its status); resuming it re-sends this activity.
        }
        catch (Exception ex) when (IsStoppedCause(ex, cancellationToken))
        {
            throw StoppedError("the result of an activity", result.InstanceId, ex);
        }
    }

    /// <summary>Applies a correlated message as a signal, once per message id.</summary>
    public async Task DeliverMessageAsync<TMessage>(string instanceId, TMessage message, Guid messageId, CancellationToken cancellationToken)
        where TMessage : notnull
    {
        ThrowIfStopped("a correlated message", instanceId);
        var payload = _serializer.ToPayload(message, typeof(object));
        var e = new HistoryEvent { Kind = HistoryEventKind.SignalReceived, Name = MessageSignals.NameOf(typeof(TMessage)), Payload = payload, Id = messageId.ToString("N") };
        try
        {
            await Enqueue(instanceId, new EventItem(e)).WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (IsStoppedCause(ex, cancellationToken))
        {
            throw StoppedError("a correlated message", instanceId, ex);
        }
    }

    /// <summary>
    /// A delivery that reaches the engine after it stopped (it stops before the host's consumers) is given back: thrown to
    /// the consumer as <see cref="Patterns.Messaging.HandlerStoppedException"/>, it is released uncounted, for the process
    /// that takes the instance over or for this one after its restart, instead of counting as a failed delivery.
    /// </summary>
    private void ThrowIfStopped(string what, string instanceId)
    {
        if (_stopping.IsCancellationRequested)
        {
            throw StoppedError(what, instanceId, null);
        }
    }

    /// <summary>
    /// Whether the engine's stop ended a hand-off: it failed (cancelled, or a lease or store call cut short) while the engine
    /// stops. The consumer's own stop is not (the consumer recognises its token itself). Released, such a message is taken
    /// again by the next owner, where a failure of its own counts as usual.
    /// </summary>
    private bool IsStoppedCause(Exception ex, CancellationToken cancellationToken) =>
        ex is not Patterns.Messaging.HandlerStoppedException && _stopping.IsCancellationRequested && !cancellationToken.IsCancellationRequested;

    private static Patterns.Messaging.HandlerStoppedException StoppedError(string what, string instanceId, Exception? cause) =>
        new($"The workflow engine stopped before {what} for instance '{instanceId}' was committed; the message is released.", cause);
}
