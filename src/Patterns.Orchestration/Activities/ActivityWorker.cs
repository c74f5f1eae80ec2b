using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Patterns.Messaging;
using Patterns.Orchestration.Engine;
using Patterns.Queues;
using Patterns.Serialization;

namespace Patterns.Orchestration.Activities;

/// <summary>
/// Runs activity tasks taken from the activity queue (competing consumers: every process that runs workers shares them)
/// and sends each outcome to the result queue. Retries, attempt timeouts and heartbeat timeouts run here, on the host's
/// <see cref="TimeProvider"/>. The task is acknowledged after its result is sent, so a crash runs it at most once more.
/// </summary>
internal sealed class ActivityWorker(
    IReadOnlyDictionary<string, ActivityDefinition> activities,
    IServiceScopeFactory scopes,
    IMessageSerializer serializer,
    IQueueSender sender,
    OrchestrationOptions options,
    TimeProvider time,
    ILogger logger)
{
    /// <summary>Raised once a retry's backoff timer is armed (tests advance time after it instead of sleeping).</summary>
    public event Action<ActivityTask, int>? RetryScheduled;

    /// <summary>Raised once an attempt's timeout and heartbeat timers are armed.</summary>
    public event Action<ActivityTask, int>? AttemptStarted;

    public async ValueTask HandleAsync(ActivityTask task, MessageContext context, CancellationToken cancellationToken)
    {
        var result = await RunAsync(task, cancellationToken).ConfigureAwait(false);
        await sender.SendAsync(options.ResultQueue, result, new MessageOptions { PartitionKey = task.InstanceId }, cancellationToken).ConfigureAwait(false);
    }

    public async Task<ActivityResult> RunAsync(ActivityTask task, CancellationToken stopping)
    {
        if (!activities.TryGetValue(task.Activity, out var activity))
        {
            return Failure(task, new KeyNotFoundException($"No activity named '{task.Activity}' is registered; add it with AddActivities<T>() or AddActivity(...)."));
        }

        object? input;
        try
        {
            input = task.Input is null || activity.InputType is null ? null : serializer.Deserialize(task.Input, activity.InputType);
        }
        catch (Exception ex)
        {
            return Failure(task, ex);
        }

        var settings = task.Settings?.ToOptions() ?? ActivityOptions.Default;
        for (var attempt = 1; ; attempt++)
        {
            Exception error;
            try
            {
                var value = await AttemptAsync(task, activity, input, settings, attempt, stopping).ConfigureAwait(false);
                return new ActivityResult(task.InstanceId, task.Run, task.Seq, serializer.ToPayload(value, activity.ResultType), null, null);
            }
            catch (OperationCanceledException) when (stopping.IsCancellationRequested)
            {
                throw; // the host stops: the task is not acknowledged and runs again elsewhere
            }
            catch (Exception ex)
            {
                error = ex;
            }

            var type = error.GetType().FullName;
            if (attempt >= settings.Retry.MaxAttempts || settings.Retry.NonRetryableErrorTypes.Contains(type))
            {
                return Failure(task, error);
            }

            OrchestrationLog.ActivityRetry(logger, task.Activity, task.InstanceId, attempt, error);
            var backoff = Task.Delay(settings.Retry.DelayAfter(attempt), time, stopping);
            RetryScheduled?.Invoke(task, attempt);
            await backoff.ConfigureAwait(false);
        }
    }

    private async Task<object?> AttemptAsync(ActivityTask task, ActivityDefinition activity, object? input, ActivityOptions settings, int attempt, CancellationToken stopping)
    {
        using var attemptToken = CancellationTokenSource.CreateLinkedTokenSource(stopping);
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
        catch (OperationCanceledException) when (attemptToken.IsCancellationRequested && !stopping.IsCancellationRequested)
        {
            throw heartbeatMissed
                ? new TimeoutException($"Activity '{task.Activity}' attempt {attempt} sent no heartbeat for {settings.HeartbeatTimeout}.")
                : new TimeoutException($"Activity '{task.Activity}' attempt {attempt} did not finish within {settings.StartToCloseTimeout}.");
        }
    }

    private static ActivityResult Failure(ActivityTask task, Exception error) =>
        new(task.InstanceId, task.Run, task.Seq, null, error.Message, error.GetType().FullName);
}
