using System.Collections.Concurrent;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Patterns.Messaging;
using Patterns.Orchestration.Engine;
using Patterns.Orchestration.History;
using Patterns.Queues;
using Patterns.Serialization;
using Patterns.Storage;

namespace Patterns.Orchestration.Activities;

/// <summary>
/// Runs activity tasks taken from the activity queue (competing consumers: every process that runs workers shares them)
/// and sends each outcome to the result queue. Retries, attempt timeouts and heartbeat timeouts run here, on the host's
/// <see cref="TimeProvider"/>. The task is acknowledged after its result is sent, so a crash runs it at most once more.
/// A retry records the attempt it reaches in the store first, so a task delivered again after a crash goes on counting
/// from there (the interrupted attempt runs once more, under its own number). A workflow that stops waiting for an
/// activity (cancellation, or the run ended) cancels the running attempt's token through <see cref="Cancel"/>; a task
/// still queued then (waiting for a free slot, or not yet delivered) is remembered as cancelled and dropped unrun when it
/// arrives.
/// </summary>
internal sealed class ActivityWorker(
    IReadOnlyDictionary<string, ActivityDefinition> activities,
    IServiceScopeFactory scopes,
    IMessageSerializer serializer,
    IQueueSender sender,
    IDocumentStorage documents,
    OrchestrationOptions options,
    TimeProvider time,
    ILogger logger) : IDisposable
{
    private readonly ConcurrentDictionary<(string InstanceId, int Run, int Seq), CancellationTokenSource> _running = new();
    private readonly CancellationTokenSource _hostStopping = new();

    // Cancellations, by (instance, incarnation, run, seq or -1 for the whole run), with when they arrived: a task that arrives after its
    // cancellation is dropped. Kept for CancelledTaskMemory, and pruned as new ones arrive.
    private readonly ConcurrentDictionary<(string InstanceId, long Incarnation, int Run, int Seq), long> _cancelled = new();
    private long _nextPrune;

    /// <summary>How long a cancellation is remembered for a task that has not arrived yet.</summary>
    internal static readonly TimeSpan CancelledTaskMemory = TimeSpan.FromHours(1);

    /// <summary>Raised when a task arrives after its activity was cancelled: it is acknowledged without running.</summary>
    public event Action<ActivityTask>? Dropped;

    /// <summary>Raised once a retry's backoff timer is armed (tests advance time after it instead of sleeping).</summary>
    public event Action<ActivityTask, int>? RetryScheduled;

    /// <summary>Raised once an attempt's timeout and heartbeat timers are armed.</summary>
    public event Action<ActivityTask, int>? AttemptStarted;

    /// <summary>
    /// Runs a task from the activity queue and sends its outcome. When the host stops (<see cref="Stop"/>) before the task
    /// is done, it throws <see cref="HandlerStoppedException"/>: the consumer releases the task, uncounted, and another
    /// process's workers (or this one's after the restart) run it.
    /// </summary>
    public async ValueTask HandleAsync(ActivityTask task, MessageContext context, CancellationToken cancellationToken)
    {
        if (_hostStopping.IsCancellationRequested)
        {
            throw new HandlerStoppedException($"The activity workers stopped before activity '{task.Activity}' of instance '{task.InstanceId}' started; its task is released.");
        }

        ActivityResult? result;
        bool retried;
        try
        {
            // A task delivered before (counted, or released by a host that stopped) goes on from the attempt its retries reached.
            var delivered = task.Resent || context.DeliveryCount > 0 || context.Envelope.TryGetHeader(EnvelopeHeaders.Released, out _);
            (result, retried) = await RunAsync(task, delivered, cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException ex) when (ex is not HandlerStoppedException && _hostStopping.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
        {
            // The host's stop ended the attempt, not a failure of the task (the consumer's own stop is recognised by its token).
            throw new HandlerStoppedException($"The activity workers stopped while activity '{task.Activity}' of instance '{task.InstanceId}' ran; its task is released.", ex);
        }

        if (result is null)
        {
            Dropped?.Invoke(task);
            return; // cancelled before it started: nobody waits for its result
        }

        await sender.SendAsync(options.ResultQueue, retried ? result with { Retried = true } : result, new MessageOptions { PartitionKey = task.InstanceId }, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Stops every running attempt as the host stops, and refuses tasks that arrive afterwards: their deliveries are
    /// released (<see cref="HandlerStoppedException"/>), not counted as failed, and run again elsewhere or after the restart.
    /// </summary>
    public void Stop() => _hostStopping.Cancel();

    public void Dispose() => _hostStopping.Dispose();

    /// <summary>
    /// Cancels the running attempts of an instance's activities (all of the run's when <paramref name="seq"/> is null), and
    /// remembers the cancellation so that their tasks still queued never run; returns how many running attempts it reached.
    /// </summary>
    public int Cancel(string instanceId, long incarnation, int run, int? seq)
    {
        // Remembered first, then the running attempts: a task that registers as running meanwhile checks this afterwards.
        var now = time.GetTimestamp();
        _cancelled[(instanceId, incarnation, run, seq ?? -1)] = now;
        if (now >= Interlocked.Read(ref _nextPrune))
        {
            Prune(now);
        }

        var reached = 0;
        foreach (var (key, source) in _running)
        {
            if (key.InstanceId == instanceId && key.Run == run && (seq is null || key.Seq == seq))
            {
                try
                {
                    source.Cancel();
                    reached++;
                }
                catch (ObjectDisposedException)
                {
                    // It finished meanwhile.
                }
            }
        }

        return reached;
    }

    /// <summary>Runs a task's attempts; returns a null result when its activity was cancelled before it started (it must not run).</summary>
    public async Task<(ActivityResult? Result, bool Retried)> RunAsync(ActivityTask task, bool delivered, CancellationToken stopping)
    {
        if (!activities.TryGetValue(task.Activity, out var activity))
        {
            return (Failure(task, new KeyNotFoundException($"No activity named '{task.Activity}' is registered; add it with AddActivities<T>() or AddActivity(...).")), false);
        }

        using var hostStopping = CancellationTokenSource.CreateLinkedTokenSource(stopping, _hostStopping.Token);
        stopping = hostStopping.Token;
        var key = (task.InstanceId, task.Run, task.Seq);
        using var canceled = CancellationTokenSource.CreateLinkedTokenSource(stopping);
        _running[key] = canceled;
        try
        {
            if (IsCancelled(task))
            {
                return (null, false);
            }

            return await RunAttemptsAsync(task, activity, delivered, canceled.Token, stopping).ConfigureAwait(false);
        }
        finally
        {
            _running.TryRemove(new KeyValuePair<(string, int, int), CancellationTokenSource>(key, canceled));
        }
    }

    private bool IsCancelled(ActivityTask task) =>
        !_cancelled.IsEmpty
        && (_cancelled.ContainsKey((task.InstanceId, task.Incarnation, task.Run, task.Seq)) || _cancelled.ContainsKey((task.InstanceId, task.Incarnation, task.Run, -1)));

    /// <summary>Forgets cancellations older than <see cref="CancelledTaskMemory"/>; runs at most once a minute.</summary>
    private void Prune(long now)
    {
        Interlocked.Exchange(ref _nextPrune, now + (long)(time.TimestampFrequency * 60));
        foreach (var (key, at) in _cancelled)
        {
            if (time.GetElapsedTime(at, now) > CancelledTaskMemory)
            {
                _cancelled.TryRemove(new KeyValuePair<(string, long, int, int), long>(key, at));
            }
        }
    }

    private async Task<(ActivityResult Result, bool Retried)> RunAttemptsAsync(ActivityTask task, ActivityDefinition activity, bool delivered, CancellationToken canceled, CancellationToken stopping)
    {
        object? input;
        try
        {
            input = task.Input is null || activity.InputType is null ? null : serializer.Deserialize(task.Input, activity.InputType);
        }
        catch (Exception ex)
        {
            return (Failure(task, ex), false);
        }

        var settings = task.Settings?.ToOptions() ?? ActivityOptions.Default;
        var key = TimerRecord.Key(task.InstanceId, task.Run, task.Seq);
        var first = 1;
        if (delivered && await documents.GetAsync(AttemptRecord.Collection, key, stopping).ConfigureAwait(false) is { } bytes
            && JsonSerializer.Deserialize(bytes, OrchestrationJson.Default.AttemptRecord) is { } reached)
        {
            // Delivered again after a crash: go on from the attempt reached, after what is left of its backoff.
            first = reached.Attempt;
            var wait = reached.NotBeforeTicks - time.GetUtcNow().UtcTicks;
            if (wait > 0)
            {
                try
                {
                    await Task.Delay(TimeSpan.FromTicks(wait), time, canceled).ConfigureAwait(false);
                }
                catch (OperationCanceledException) when (!stopping.IsCancellationRequested)
                {
                    return (Failure(task, new OperationCanceledException($"Activity '{task.Activity}' was cancelled by its workflow before attempt {first}.")), true);
                }
            }
        }

        for (var attempt = first; ; attempt++)
        {
            Exception error;
            try
            {
                var value = await AttemptAsync(task, activity, input, settings, attempt, canceled).ConfigureAwait(false);
                return (new ActivityResult(task.InstanceId, task.Run, task.Seq, serializer.ToPayload(value, activity.ResultType), null, null), attempt > 1);
            }
            catch (OperationCanceledException) when (stopping.IsCancellationRequested)
            {
                throw; // the host stops: the task is not acknowledged and runs again elsewhere
            }
            catch (OperationCanceledException) when (canceled.IsCancellationRequested)
            {
                return (Failure(task, new OperationCanceledException($"Activity '{task.Activity}' was cancelled by its workflow in attempt {attempt}.")), attempt > 1);
            }
            catch (Exception ex)
            {
                error = ex;
            }

            var type = error.GetType().FullName;
            if (attempt >= settings.Retry.MaxAttempts || settings.Retry.NonRetryableErrorTypes.Contains(type))
            {
                return (Failure(task, error), attempt > 1);
            }

            OrchestrationLog.ActivityRetry(logger, task.Activity, task.InstanceId, attempt, error);
            var delay = settings.Retry.DelayAfter(attempt);
            var next = new AttemptRecord { Attempt = attempt + 1, NotBeforeTicks = (time.GetUtcNow() + delay).UtcTicks };
            await documents.UpsertAsync(AttemptRecord.Collection, key, JsonSerializer.SerializeToUtf8Bytes(next, OrchestrationJson.Default.AttemptRecord), stopping).ConfigureAwait(false);
            var backoff = Task.Delay(delay, time, canceled);
            RetryScheduled?.Invoke(task, attempt);
            try
            {
                await backoff.ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (canceled.IsCancellationRequested && !stopping.IsCancellationRequested)
            {
                return (Failure(task, new OperationCanceledException($"Activity '{task.Activity}' was cancelled by its workflow before attempt {attempt + 1}.")), true);
            }
        }
    }

    private async Task<object?> AttemptAsync(ActivityTask task, ActivityDefinition activity, object? input, ActivityOptions settings, int attempt, CancellationToken canceled)
    {
        using var attemptToken = CancellationTokenSource.CreateLinkedTokenSource(canceled);
        var lastBeat = time.GetTimestamp();
        var heartbeatMissed = false;
        using var watchdog = settings.HeartbeatTimeout is { } heartbeat
            ? time.CreateTimer(
                _ =>
                {
                    if (time.GetElapsedTime(Interlocked.Read(ref lastBeat)) >= heartbeat)
                    {
                        heartbeatMissed = true;
                        attemptToken.Cancel();
                    }
                },
                null,
                heartbeat,
                heartbeat)
            : null;
        using var timeout = time.CreateTimer(_ => attemptToken.Cancel(), null, settings.StartToCloseTimeout, Timeout.InfiniteTimeSpan);
        var scope = scopes.CreateAsyncScope();
        await using var disposeScope = scope.ConfigureAwait(false);
        var context = new ActivityContext(task.InstanceId, task.Activity, attempt, scope.ServiceProvider, () => Interlocked.Exchange(ref lastBeat, time.GetTimestamp()), attemptToken.Token);
        AttemptStarted?.Invoke(task, attempt);
        try
        {
            return await activity.Invoke(scope.ServiceProvider, input, context).WaitAsync(attemptToken.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (attemptToken.IsCancellationRequested && !canceled.IsCancellationRequested)
        {
            throw heartbeatMissed
                ? new TimeoutException($"Activity '{task.Activity}' attempt {attempt} sent no heartbeat for {settings.HeartbeatTimeout}.")
                : new TimeoutException($"Activity '{task.Activity}' attempt {attempt} did not finish within {settings.StartToCloseTimeout}.");
        }
    }

    private static ActivityResult Failure(ActivityTask task, Exception error) =>
        new(task.InstanceId, task.Run, task.Seq, null, error.Message, error.GetType().FullName);
}
