using System.Collections.Concurrent;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Patterns.Storage;

namespace Patterns.Etl;

/// <summary>The jobs of the host: runs them on demand and, as a hosted service, on their schedules.</summary>
internal sealed class EtlJobs(IEnumerable<EtlJobList> lists, IServiceProvider services, TimeProvider? time = null, ILoggerFactory? loggers = null) : BackgroundService, IEtlJobs
{
    private readonly Dictionary<string, EtlJobRegistration> _jobs = lists.SelectMany(l => l.Jobs).ToDictionary(j => j.Name, StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, SemaphoreSlim> _gates = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, EtlRunResult> _last = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, EtlJobState> _states = new(StringComparer.Ordinal);
    private readonly TimeProvider _time = time ?? TimeProvider.System;
    private readonly ILogger _logger = loggers?.CreateLogger("Patterns.Etl") ?? NullLogger.Instance;
    private readonly IStorageErrorClassifier[] _classifiers = [.. services.GetServices<IStorageErrorClassifier>()];
    private TaskCompletionSource _waiting = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private TaskCompletionSource _parked = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public IReadOnlyList<string> Names => [.. _jobs.Keys.Order(StringComparer.Ordinal)];

    public EtlRunResult? LastResult(string name) => _last.TryGetValue(name, out var result) ? result : null;

    public async Task<EtlRunResult> RunAsync(string name, EtlRunOptions? options = null, CancellationToken cancellationToken = default)
    {
        if (!_jobs.TryGetValue(name, out var job))
        {
            throw new KeyNotFoundException($"No ETL job is named '{name}'; the jobs are {string.Join(", ", Names.Select(n => $"'{n}'"))}.");
        }

        var gate = _gates.GetOrAdd(name, static _ => new SemaphoreSlim(1, 1));
        await gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            // A copy: the host's clock, logging and classifiers fill what the caller left unset, never the caller's object
            // (nor the job's own options, which a later run with other services would then keep).
            var run = (options ?? job.Options.RunOptions).Clone();
            run.TimeProvider ??= _time;
            run.LoggerFactory ??= loggers;
            run.StorageErrorClassifiers ??= _classifiers;
            var state = _states.GetOrAdd(name, static _ => new EtlJobState());
            EtlRunResult result;
            try
            {
                result = await job.Pipeline(services).RunAsync(run, cancellationToken).ConfigureAwait(false);
            }
            catch (Exception ex) when (EtlOutage.Is(ex) && !cancellationToken.IsCancellationRequested)
            {
                var now = _time.GetUtcNow();
                var since = state.Outage(now, ex);
                if (job.Options.MaxOutageDuration is { } limit && now - since >= limit)
                {
                    var stopped = new EtlOutageLimitExceededException(
                        $"ETL job '{name}' stopped: its runs have failed on an outage no message caused since {since:o}, longer than MaxOutageDuration ({limit}); " +
                        $"{EtlOutage.Consequence(ex)}. Last error: {ex.GetType().Name}: {ex.Message}",
                        ex)
                    { Job = name, Since = since };
                    state.Stop(stopped);
                    EtlLog.OutageLimitExceeded(_logger, ex, name, since, limit, EtlOutage.Consequence(ex));
                    throw stopped;
                }

                EtlLog.OutageRun(_logger, ex, name, since, EtlOutage.Consequence(ex));
                throw;
            }
            catch (Exception) when (!cancellationToken.IsCancellationRequested)
            {
                state.Clear(succeeded: false);
                throw;
            }

            state.Clear(succeeded: true);
            _last[name] = result;
            return result;
        }
        finally
        {
            gate.Release();
        }
    }

    /// <summary>Gets the health of each job: stopped after <see cref="EtlJobOptions.MaxOutageDuration"/>, failing on an outage, or well.</summary>
    internal IReadOnlyList<(string Job, EtlJobState.Health Health)> GetJobHealth() =>
        [.. _jobs.Keys.Order(StringComparer.Ordinal).Select(n => (n, _states.TryGetValue(n, out var state) ? state.Read() : default))];

    /// <summary>Completes when a scheduled job next starts waiting on the clock (for tests on virtual time).</summary>
    internal Task NextWaitAsync() => Volatile.Read(ref _waiting).Task;

    /// <summary>Completes when a scheduled job's time next comes while it is stopped, and its schedule starts waiting for a run on demand to succeed (for tests).</summary>
    internal Task NextParkAsync() => Volatile.Read(ref _parked).Task;

    protected override Task ExecuteAsync(CancellationToken stoppingToken) =>
        Task.WhenAll(_jobs.Values.Where(j => j.Scheduled).Select(j => ScheduleAsync(j, stoppingToken)));

    private async Task ScheduleAsync(EtlJobRegistration job, CancellationToken stoppingToken)
    {
        var first = job.Options.RunOnStart;
        while (!stoppingToken.IsCancellationRequested)
        {
            if (!first)
            {
                var now = _time.GetUtcNow();
                DateTimeOffset? next = job.Options.Interval is { } interval ? now + interval : job.Cron?.GetNextOccurrence(now, job.Options.TimeZone);
                if (next is not { } at)
                {
                    return;
                }

                try
                {
                    var delay = Task.Delay(at - now, _time, stoppingToken);
                    Interlocked.Exchange(ref _waiting, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).TrySetResult();
                    await delay.ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    return;
                }
            }

            first = false;

            // A job stopped by its outage limit (by a run on demand, or by a scheduled run) is not run by its schedule:
            // when its time comes, the schedule waits until a run on demand succeeds, then goes on from then (the next
            // run comes an interval, or at the cron's next occurrence, later).
            var resumed = _states.GetOrAdd(job.Name, static _ => new EtlJobState()).ResumedAsync();
            if (!resumed.IsCompleted)
            {
                Interlocked.Exchange(ref _parked, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).TrySetResult();
                try
                {
                    await resumed.WaitAsync(stoppingToken).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    return;
                }

                continue;
            }

            try
            {
                await RunAsync(job.Name, null, stoppingToken).ConfigureAwait(false);
            }
            catch (EtlOutageLimitExceededException)
            {
                // Logged as the job stopped. The check above makes the schedule wait until a run on demand succeeds.
            }
            catch (Exception ex) when (EtlOutage.Is(ex) && !stoppingToken.IsCancellationRequested)
            {
                // Logged as an outage run (a warning); the schedule goes on, and the next run tries again.
            }
            catch (Exception ex) when (ex is not OperationCanceledException || !stoppingToken.IsCancellationRequested)
            {
                // A failed run is logged; the schedule goes on, and the next run resumes at the last committed batch.
                EtlLog.ScheduledRunFailed(_logger, ex, job.Name);
            }
        }
    }
}

/// <summary>A job's outage: since when its runs have failed on one no message caused, and whether it stopped.</summary>
internal sealed class EtlJobState
{
    private readonly Lock _gate = new();
    private DateTimeOffset? _since;
    private Exception? _error;
    private bool _stopped;
    private TaskCompletionSource _resumed = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Records a run that failed on an outage at <paramref name="now"/>.</summary>
    /// <returns>When the unbroken series of such runs began.</returns>
    public DateTimeOffset Outage(DateTimeOffset now, Exception error)
    {
        lock (_gate)
        {
            _since ??= now;
            _error = error;
            return _since.Value;
        }
    }

    /// <summary>Stops the job with <paramref name="error"/>.</summary>
    public void Stop(Exception error)
    {
        lock (_gate)
        {
            _stopped = true;
            _error = error;
        }
    }

    /// <summary>Ends the series: a run ended without an outage. When it <paramref name="succeeded"/>, a stopped job is healthy again and its schedule resumes.</summary>
    public void Clear(bool succeeded)
    {
        TaskCompletionSource? resumed = null;
        lock (_gate)
        {
            _since = null;
            if (!_stopped)
            {
                _error = null;
            }
            else if (succeeded)
            {
                _stopped = false;
                _error = null;
                resumed = _resumed;
                _resumed = new(TaskCreationOptions.RunContinuationsAsynchronously);
            }
        }

        resumed?.TrySetResult();
    }

    /// <summary>Completes when the stopped job's schedule may go on.</summary>
    public Task ResumedAsync()
    {
        lock (_gate)
        {
            return _stopped ? _resumed.Task : Task.CompletedTask;
        }
    }

    public Health Read()
    {
        lock (_gate)
        {
            return new Health(_since, _stopped, _error);
        }
    }

    /// <summary>A job's health: since when it fails on an outage (or null), whether it stopped, and its last error.</summary>
    internal readonly record struct Health(DateTimeOffset? OutageSince, bool Stopped, Exception? Error);
}

/// <summary>The jobs one <c>AddEtl</c> call registered.</summary>
internal sealed record EtlJobList(List<EtlJobRegistration> Jobs);
