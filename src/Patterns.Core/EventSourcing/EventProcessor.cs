using System.Buffers;
using System.Diagnostics;
using System.Globalization;
using System.Runtime.CompilerServices;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using Patterns.Resilience;
using Patterns.Serialization;
using Patterns.Storage;
using Patterns.Telemetry;
using Polly;

namespace Patterns.EventSourcing;

/// <summary>The stores and services every subscription runtime shares.</summary>
internal sealed record EventProcessorServices(
    IEventStorage Storage,
    ICheckpointStore Checkpoints,
    IDocumentStorage Documents,
    EventTypeMap Types,
    IMessageSerializer Serializer,
    TimeProvider TimeProvider,
    EventSourcingOptions Options,
    ILoggerFactory LoggerFactory)
{
    /// <summary>Gets the store's unit of work, when it has one: read-model writes then commit with the checkpoint.</summary>
    public IUnitOfWorkStorage? Units { get; init; }

    /// <summary>Gets the store's leases, when it has them: one process at a time runs each subscription.</summary>
    public ILeaseStore? Leases { get; init; }

    /// <summary>Gets this process's owner id for leases.</summary>
    public string Owner { get; init; } = EventProcessorOwner.Create();

    /// <summary>
    /// Gets the classifiers that tell a transient store error (an outage: a subscription retries it with back-off) from a
    /// permanent one (it faults): the store's own, when it is an <see cref="IStorageErrorClassifier"/>, then the registered ones.
    /// </summary>
    public IReadOnlyList<IStorageErrorClassifier> Classifiers { get; init; } = [];

    /// <summary>Whether a store call that failed with <paramref name="exception"/> may succeed later (<see cref="StorageErrors.IsRetryable"/>).</summary>
    public bool IsTransient(Exception exception)
    {
        // The kernel's rules come first (StorageErrors.Classify), then the first classifier that knows the error.
        foreach (var classifier in Classifiers)
        {
            if (classifier.Classify(exception) is not null)
            {
                return StorageErrors.IsRetryable(exception, classifier);
            }
        }

        return StorageErrors.IsRetryable(exception);
    }
}

internal static class EventProcessorOwner
{
    public static string Create() =>
        string.Create(CultureInfo.InvariantCulture, $"{Environment.MachineName}/{Environment.ProcessId}/{Guid.NewGuid():N}");
}

/// <summary>
/// Runs one subscription or async projection: catches up from its checkpoint, then waits for new events
/// (<see cref="IEventStorage.WaitForEventsAsync"/>); handles each event through its resilience pipeline and
/// never moves its checkpoint past an event it did not handle.
/// </summary>
internal sealed class EventProcessor : IDisposable
{
    private readonly ProcessorRegistration _registration;
    private readonly EventProcessorOptions _options;
    private readonly EventProcessorServices _services;
    private readonly EventProcessorHandler _handler;
    private readonly ResiliencePipeline? _pipeline;
    private readonly EventSelector _selector;
    private readonly string? _streamId;
    private readonly ProjectionContext _context;
    private readonly PendingDocuments _documents;
    private readonly ShadowWriter _writer;
    private readonly string[] _collections;
    private readonly ILogger _logger;
    private readonly TagList _tags;
    private readonly SemaphoreSlim _control = new(1, 1);
    private readonly Lock _gate = new();
    private readonly List<(long Position, TaskCompletionSource Signal)> _waiters = [];

    // The events of the page in hand that the read-ahead deserialized already, by position.
    private readonly Dictionary<long, RecordedEvent> _decoded = [];
    private CancellationTokenSource? _stopping;
    private CancellationTokenSource? _aborting;
    private Task? _loop;
    private Task? _abandoned;
    private SubscriptionState _state = SubscriptionState.Stopped;
    private long _checkpoint;
    private long _processed;
    private long _current;
    private long _saved;
    private long _pendingPosition;
    private string _checkpointName;
    private bool _rebuilding;
    private long _liveSaved;
    private Lease? _lease;
    private SubscriptionFaultedException? _error;
    private Exception? _storeError;
    private Exception? _leaseStoreError;
    private int _storeFailures;

    // When the unbroken series of transient store failures began (EventSourcingOptions.MaxOutageDuration), or null.
    private DateTimeOffset? _outageSince;
    private int _disposed;

    public EventProcessor(ProcessorRegistration registration, EventProcessorServices services, EventProcessorHandler handler)
    {
        _registration = registration;
        _options = registration.Options;
        _services = services;
        _handler = handler;
        _streamId = registration.StreamId;
        _logger = services.LoggerFactory.CreateLogger("Patterns.EventSourcing.Subscriptions." + registration.Name);
        _tags = EventSourcingTelemetry.Tags(registration.Name);
        _selector = services.Types.CreateSelector(_options.EventTypes, _options.StreamPrefix);
        _documents = new PendingDocuments(services.Documents, readsAhead: registration.ReadAhead is not null);
        _collections = [.. (_options as ProjectionOptions)?.Collections ?? []];
        _writer = new ShadowWriter(_documents, _collections);
        _checkpointName = registration.Name;
        _context = new ProjectionContext(registration.Name, _writer, services.Serializer, isInline: false);
        _pipeline = PipelineFactory.Create(_options, services.TimeProvider, args =>
        {
            EventSourcingTelemetry.Retried.Add(1, _tags);
            EventSourcingLog.Retrying(_logger, args.Outcome.Exception, Name, args.AttemptNumber + 1, Volatile.Read(ref _current), args.RetryDelay);
        });
    }

    public string Name => _registration.Name;

    public ProcessorRegistration Registration => _registration;

    public SubscriptionStatus Status
    {
        get
        {
            lock (_gate)
            {
                return new SubscriptionStatus(Name, _state, _checkpoint, _processed, _error) { StoreError = _state == SubscriptionState.Recovering ? _storeError : null };
            }
        }
    }

    public Task StartAsync(CancellationToken cancellationToken) => ControlAsync(static (p, _) =>
    {
        p.StartLocked();
        return Task.CompletedTask;
    }, cancellationToken);

    /// <summary>Stops the loop, letting the event in hand finish until <paramref name="drainDeadline"/>, and waiting for the loop until <paramref name="abandonAfter"/>.</summary>
    public Task StopAsync(CancellationToken drainDeadline, CancellationToken abandonAfter) =>
        ControlAsync((p, ct) => p.StopLockedAsync(drainDeadline, ct), abandonAfter);

    public Task RestartAsync(CancellationToken cancellationToken) => ControlAsync(static async (p, ct) =>
    {
        await p.StopLockedAsync(ct, ct).ConfigureAwait(false);
        p.StartLocked();
    }, cancellationToken);

    /// <summary>
    /// Starts a rebuild into shadow collections. The request is recorded durably (the shadow checkpoint reset to 0,
    /// then the rebuild's state document), so whichever process runs the projection next resumes it; the live
    /// collections and checkpoint are untouched until the shadow has caught up and is swapped in.
    /// </summary>
    public Task RebuildAsync(CancellationToken cancellationToken) => ControlAsync(static async (p, ct) =>
    {
        var wasRunning = p._loop is not null;
        await p.StopLockedAsync(ct, ct).ConfigureAwait(false);
        EventSourcingLog.Rebuilding(p._logger, p.Name, p._collections.Length == 0 ? "none" : string.Join(", ", p._collections));
        await p._services.Checkpoints.SaveAsync(ProjectionRebuild.Shadow(p.Name), 0, ct).ConfigureAwait(false);
        await p._services.Documents.UpsertAsync(
            ProjectionRebuild.StateCollection, p.Name, ProjectionRebuild.State(p.Name, p._services.TimeProvider.GetUtcNow()), ct).ConfigureAwait(false);
        lock (p._gate)
        {
            // Waiters wait for the rebuilt model: the position it reaches counts once it is swapped in.
            p._processed = 0;
        }

        if (wasRunning)
        {
            p.StartLocked();
        }
    }, cancellationToken);

    public async Task<int> ReplayParkedAsync(CancellationToken cancellationToken)
    {
        var handled = 0;
        await ControlAsync(async (p, ct) =>
        {
            // A faulted subscription stays faulted (RestartAsync resumes it); a running one resumes after the replay.
            var wasRunning = p._loop is { IsCompleted: false };
            await p.StopLockedAsync(ct, ct).ConfigureAwait(false);
            try
            {
                handled = await p.ReplayParkedLockedAsync(ct).ConfigureAwait(false);
            }
            finally
            {
                if (wasRunning)
                {
                    p.StartLocked();
                }
            }
        }, cancellationToken).ConfigureAwait(false);
        return handled;
    }

    public void Dispose()
    {
        // The container may dispose the manager once per service it is registered as.
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        // Disposed without a stop (the host was not stopped): end the loop instead of leaving it on disposed services.
        _stopping?.Cancel();
        _aborting?.Cancel();
        if (_loop is null or { IsCompleted: true })
        {
            _stopping?.Dispose();
            _aborting?.Dispose();
        }

        _control.Dispose();
    }

    public Task WaitForPositionAsync(long position, CancellationToken cancellationToken)
    {
        lock (_gate)
        {
            if (_error is not null)
            {
                return Task.FromException(_error);
            }

            if (_processed >= position)
            {
                return Task.CompletedTask;
            }

            var signal = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            _waiters.Add((position, signal));
            return signal.Task.WaitAsync(cancellationToken);
        }
    }

    /// <summary>Runs one lifecycle change at a time (start, stop, restart, rebuild).</summary>
    private async Task ControlAsync(Func<EventProcessor, CancellationToken, Task> change, CancellationToken cancellationToken)
    {
        await _control.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            await change(this, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            _control.Release();
        }
    }

    private void StartLocked()
    {
        if (_loop is { IsCompleted: false })
        {
            return;
        }

        lock (_gate)
        {
            _error = null;
            _storeError = null;
            _leaseStoreError = null;
            _storeFailures = 0;
            _outageSince = null;

            // With leases, the run owns nothing until it takes its lease: it reports Standby until then, never a
            // CatchingUp that another process may be the one doing.
            _state = _services.Leases is not null && _services.Options.ExclusiveOwnership ? SubscriptionState.Standby : SubscriptionState.CatchingUp;
        }

        _stopping = new CancellationTokenSource();
        _aborting = new CancellationTokenSource();
        var stopping = _stopping.Token;
        var aborting = _aborting.Token;

        // A run abandoned at a stop deadline may still be inside its handler: the new run waits for it to end, so
        // that two runs never handle events (or save checkpoints) side by side.
        var previous = _abandoned;
        _abandoned = null;
        _loop = Task.Run(() => RunAsync(previous, stopping, aborting), CancellationToken.None);
    }

    /// <summary>
    /// Stops the loop: it reads nothing more and finishes the event in hand (draining). When
    /// <paramref name="drainDeadline"/> fires, the handler's token is cancelled; when <paramref name="abandonAfter"/>
    /// fires, a loop that still has not ended (its handler ignores cancellation) is abandoned.
    /// </summary>
    private async Task StopLockedAsync(CancellationToken drainDeadline, CancellationToken abandonAfter)
    {
        if (_loop is not { } loop || _stopping is not { } stopping || _aborting is not { } aborting)
        {
            return;
        }

        _loop = null;
        _stopping = null;
        _aborting = null;
        await stopping.CancelAsync().ConfigureAwait(false);
        EventSourcingLog.Stopping(_logger, Name);
        try
        {
            using (drainDeadline.UnsafeRegister(static s => ((CancellationTokenSource)s!).Cancel(), aborting))
            {
                await loop.WaitAsync(abandonAfter).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (abandonAfter.IsCancellationRequested)
        {
            _abandoned = loop;
            throw;
        }
        finally
        {
            lock (_gate)
            {
                if (_state != SubscriptionState.Faulted)
                {
                    _state = SubscriptionState.Stopped;
                }
            }
        }

        // Only once the loop has ended: a loop abandoned at a deadline may still observe the tokens.
        stopping.Dispose();
        aborting.Dispose();
    }

    /// <summary>
    /// The loop. <paramref name="stopping"/> ends reads and waits, and is checked between events;
    /// <paramref name="aborting"/> (cancelled at the stop deadline, after <paramref name="stopping"/>) is what the handler
    /// and the writes that record its outcome see, so an event in hand is finished rather than cut off.
    /// </summary>
    private async Task RunAsync(Task? previous, CancellationToken stopping, CancellationToken aborting)
    {
        try
        {
            if (previous is { IsCompleted: false })
            {
                EventSourcingLog.WaitingForAbandonedRun(_logger, Name);
                await previous.WaitAsync(stopping).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (stopping.IsCancellationRequested)
        {
            return;
        }

        if (_services.Leases is not { } leases || !_services.Options.ExclusiveOwnership)
        {
            await RunRecoveringAsync(stopping, aborting).ConfigureAwait(false);
            return;
        }

        // Single active owner: run only while holding the lease; on losing it, go back to standby. A transient store
        // error while taking or renewing the lease is retried with the subscription's back-off; an outage past
        // MaxOutageDuration while taking it faults the subscription and ends the runner (outaged).
        using var outaged = CancellationTokenSource.CreateLinkedTokenSource(stopping);
        var runner = new LeaseRunner(leases, "subscription/" + Name, _services.Owner, _services.Options.LeaseDuration, _services.TimeProvider)
        {
            StoreRetryDelay = RetryDelay,
        };
        await runner.RunAsync(
            async (lease, owned) =>
            {
                _lease = lease;
                lock (_gate)
                {
                    _leaseStoreError = null;
                }

                try
                {
                    SetState(SubscriptionState.CatchingUp);
                    await RunRecoveringAsync(owned, aborting).ConfigureAwait(false);
                }
                finally
                {
                    _lease = null;
                }

                return Status.State == SubscriptionState.Faulted ? LeaseRunner.Outcome.Done : LeaseRunner.Outcome.Lost;
            },
            () =>
            {
                (Exception Error, DateTimeOffset Since, TimeSpan Limit)? fault = null;
                lock (_gate)
                {
                    // The lease could not be taken because the store failed (an outage): that is no standby, the
                    // subscription is recovering. Without a failure another process holds the lease.
                    // (A renewal's failure is no reason: a take that answered since then reset the runner's count.)
                    if (_leaseStoreError is { } error && runner.StoreFailures > 0)
                    {
                        _leaseStoreError = null;
                        if (OutageExceededLocked(error) is { } exceeded)
                        {
                            fault = exceeded;
                        }
                        else
                        {
                            EnterRecoveryLocked(error);
                        }
                    }
                    else if (_state != SubscriptionState.Faulted)
                    {
                        _leaseStoreError = null;

                        // Another process holds the lease: the store answers, and the outage (if any) is over for this one.
                        _storeError = null;
                        _outageSince = null;
                        _state = SubscriptionState.Standby;
                    }
                }

                if (fault is not null)
                {
                    FaultOnOutage(fault.Value);
                    outaged.Cancel();
                }
            },
            lease => EventSourcingLog.OwnershipLost(_logger, Name, lease.Token),
            ex =>
            {
                if (_services.IsTransient(ex))
                {
                    EventSourcingLog.LeaseStoreUnavailable(_logger, ex, Name, runner.StoreFailures);
                    lock (_gate)
                    {
                        _leaseStoreError = ex;
                    }
                }
                else
                {
                    EventSourcingLog.StoreFailed(_logger, ex, Name);
                }
            },
            outaged.Token).ConfigureAwait(false);
    }

    /// <summary>
    /// Runs <see cref="RunOwnedAsync"/> again, from the checkpoint, each time it ends on a transient store error (an
    /// outage), after a back-off that doubles from <see cref="EventSourcingOptions.StoreRetryDelay"/> up to
    /// <see cref="EventSourcingOptions.StoreRetryMaxDelay"/> and starts again once a commit succeeds. The state is
    /// <see cref="SubscriptionState.Recovering"/> from the failure until a commit succeeds or the run is caught up.
    /// </summary>
    private async Task RunRecoveringAsync(CancellationToken stopping, CancellationToken aborting)
    {
        while (await RunOwnedAsync(stopping, aborting).ConfigureAwait(false) is { } error)
        {
            TimeSpan delay;
            int failures;
            (Exception Error, DateTimeOffset Since, TimeSpan Limit)? fault;
            lock (_gate)
            {
                failures = ++_storeFailures;
                fault = OutageExceededLocked(error);
                if (fault is null)
                {
                    EnterRecoveryLocked(error);
                }

                delay = RetryDelay(failures);
            }

            if (fault is not null)
            {
                FaultOnOutage(fault.Value);
                return;
            }

            EventSourcingLog.StoreUnavailable(_logger, error, Name, failures, delay);
            try
            {
                await Task.Delay(delay, _services.TimeProvider, stopping).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }

    private TimeSpan RetryDelay(int failures)
    {
        var first = _services.Options.StoreRetryDelay;
        var max = _services.Options.StoreRetryMaxDelay;
        var ticks = first.Ticks * Math.Pow(2, Math.Min(failures - 1, 30));
        return ticks >= max.Ticks ? max : TimeSpan.FromTicks((long)ticks);
    }

    /// <summary>
    /// Counts a transient store failure into the outage (starting it, when it is the first in a row); returns what to
    /// fault with when the outage has now lasted <see cref="EventSourcingOptions.MaxOutageDuration"/> or longer.
    /// </summary>
    private (Exception Error, DateTimeOffset Since, TimeSpan Limit)? OutageExceededLocked(Exception error)
    {
        var now = _services.TimeProvider.GetUtcNow();
        var since = _outageSince ??= now;
        return _services.Options.MaxOutageDuration is { } limit && limit != Timeout.InfiniteTimeSpan && now - since >= limit && _state != SubscriptionState.Faulted
            ? (error, since, limit)
            : null;
    }

    /// <summary>Gives up on an outage that outlasted <see cref="EventSourcingOptions.MaxOutageDuration"/>: faulted, with the last store error.</summary>
    private void FaultOnOutage((Exception Error, DateTimeOffset Since, TimeSpan Limit) outage)
    {
        var (error, since, limit) = outage;
        var checkpoint = Status.Checkpoint;
        EventSourcingLog.OutageLimitExceeded(_logger, error, Name, since, limit, checkpoint);
        Fault(new SubscriptionFaultedException(
            Name,
            string.Create(
                CultureInfo.InvariantCulture,
                $"Subscription '{Name}' stopped: the store has failed with transient errors since {since:o}, longer than EventSourcingOptions.MaxOutageDuration ({limit}). Last error: {error.GetType().FullName}: {error.Message}. It resumes from its checkpoint ({checkpoint}) when restarted."),
            error));
    }

    private void EnterRecoveryLocked(Exception error)
    {
        if (_state != SubscriptionState.Faulted)
        {
            _storeError = error;
            _state = SubscriptionState.Recovering;
        }
    }

    /// <summary>A commit succeeded or the run caught up: the store is back.</summary>
    private void Recovered()
    {
        lock (_gate)
        {
            _storeFailures = 0;
            _storeError = null;
            _outageSince = null;
            if (_state == SubscriptionState.Recovering)
            {
                _state = SubscriptionState.CatchingUp;
            }
        }
    }

    private void SetState(SubscriptionState state)
    {
        lock (_gate)
        {
            if (_state is not (SubscriptionState.Faulted or SubscriptionState.Recovering))
            {
                _state = state;
            }
        }
    }

    /// <summary>Runs from the checkpoint until stopped or faulted; returns the transient store error it ended on, if it did.</summary>
    private async Task<Exception?> RunOwnedAsync(CancellationToken stopping, CancellationToken aborting)
    {
        Exception? transient = null;
        var dirty = false;
        long cursor = 0;

        // The next page, read while the previous one commits (see FetchPageAsync).
        Task<(long Head, List<StoredEvent> Page)>? next = null;
        try
        {
            _documents.Clear();
            cursor = await LoadStartAsync(stopping).ConfigureAwait(false);
            EventSourcingLog.SubscriptionStarted(_logger, Name, cursor);
            var sinceCheckpoint = 0;
            while (true)
            {
                stopping.ThrowIfCancellationRequested();
                var fetch = next ?? FetchPageAsync(cursor, stopping);
                next = null;
                var (head, page) = await fetch.ConfigureAwait(false);
                if (_registration.ReadAhead is { } readAhead)
                {
                    await ReadAheadAsync(page, readAhead, stopping).ConfigureAwait(false);
                }

                var read = page.Count;
                var full = read >= _options.BatchSize;
                for (var i = 0; i < page.Count; i++)
                {
                    var stored = page[i];

                    // Stopping: the event in hand was finished; the next one is left for the next run.
                    stopping.ThrowIfCancellationRequested();
                    Volatile.Write(ref _current, stored.Position);
                    var selection = _selector.Select(stored.StreamId, stored.EventType);
                    if (selection == EventSelection.Unknown)
                    {
                        // A type-filtered subscription cannot tell whether it selects an event whose name this process
                        // has not registered (a newer process appended it): it stops before the event rather than skip
                        // one it may select. Registering the type (deploying this process's new version) resumes it.
                        FaultUnknown(stored);
                        return null;
                    }

                    if (selection == EventSelection.Handle && !await HandleAsync(stored, aborting).ConfigureAwait(false))
                    {
                        return null;
                    }

                    cursor = _streamId is null ? stored.Position : stored.Version;
                    _pendingPosition = stored.Position;
                    dirty = true;
                    if (++sinceCheckpoint >= _options.CheckpointInterval)
                    {
                        if (full && i == page.Count - 1)
                        {
                            next = FetchPageAsync(cursor, stopping);
                        }

                        await CommitAsync(cursor, SubscriptionState.CatchingUp, aborting).ConfigureAwait(false);
                        dirty = false;
                        sinceCheckpoint = 0;
                    }
                }

                if (read < _options.BatchSize)
                {
                    // Every selected event at or below the head was committed when the read began, so a
                    // whole-log subscription has seen all of them and may checkpoint the head itself.
                    if (_streamId is null && head > cursor)
                    {
                        cursor = head;
                        dirty = true;
                    }

                    _pendingPosition = Math.Max(_pendingPosition, head);
                    if (dirty)
                    {
                        await CommitAsync(cursor, SubscriptionState.Live, aborting).ConfigureAwait(false);
                        dirty = false;
                        sinceCheckpoint = 0;
                    }

                    if (_rebuilding)
                    {
                        // The shadow has caught up with the head: it replaces the live model now.
                        await SwapAsync(cursor, aborting).ConfigureAwait(false);
                    }

                    Recovered();
                    Progress(cursor, head, SubscriptionState.Live);
                    EventSourcingLog.CaughtUp(_logger, Name, head);
                    await _services.Storage.WaitForEventsAsync(Math.Max(head, Volatile.Read(ref _current)), stopping).ConfigureAwait(false);
                }
                else if (dirty)
                {
                    // One transaction per page: the page's read-model writes and its checkpoint commit together. The
                    // next page is read meanwhile.
                    next ??= FetchPageAsync(cursor, stopping);
                    await CommitAsync(cursor, SubscriptionState.CatchingUp, aborting).ConfigureAwait(false);
                    dirty = false;
                    sinceCheckpoint = 0;
                }
            }
        }
        catch (Exception) when (stopping.IsCancellationRequested)
        {
            // Stopping, or the lease was lost. A store may report a cancelled read or wait as its own exception: that
            // is no fault either.
        }
        catch (Exception ex) when (_lease is not null && ex is LeaseLostException or CheckpointConflictException)
        {
            // Another process owns the subscription now; what this run had not committed is the new owner's to handle.
            EventSourcingLog.StoreFailed(_logger, ex, Name);
            dirty = false;
        }
        catch (Exception ex) when (_services.IsTransient(ex))
        {
            // An outage: what this run had not committed is dropped (its read-model writes commit with the checkpoint,
            // so none of it is stored), and the next run resumes from the checkpoint the store has.
            transient = ex;
            dirty = false;
        }
        catch (Exception ex)
        {
            EventSourcingLog.StoreFailed(_logger, ex, Name);
            Fault(new SubscriptionFaultedException(Name, 0, null, 0, ex));
            dirty = false;
        }
        finally
        {
            // A page read ahead of a commit that failed, or of a stop, is not handled: the next run reads it again.
            ObserveAbandoned(next);
            if (dirty)
            {
                await SaveFinalCheckpointAsync(cursor).ConfigureAwait(false);
            }

            _documents.Clear();
            EventSourcingLog.SubscriptionStopped(_logger, Name, cursor);
        }

        return transient;
    }

    /// <summary>
    /// Commits the read-model writes buffered since the last checkpoint together with the checkpoint, in one unit of work
    /// when the store has one. The checkpoint must still be where this run last left it, so a run that lost its place
    /// (another process moved the checkpoint) fails instead of moving it back.
    /// </summary>
    private async ValueTask CommitAsync(long cursor, SubscriptionState? state, CancellationToken cancellationToken)
    {
        await WriteBufferAsync(cursor, cancellationToken).ConfigureAwait(false);
        _saved = cursor;
        Recovered();

        // While rebuilding, the live model has not moved: nothing new is processed for waiters until the swap.
        Progress(cursor, _rebuilding ? 0 : _pendingPosition, state);
    }

    /// <summary>Commits buffered document writes without moving the checkpoint (replaying parked events).</summary>
    private ValueTask CommitDocumentsAsync(CancellationToken cancellationToken) =>
        _documents.IsDirty ? WriteBufferAsync(null, cancellationToken) : default;

    /// <summary>
    /// Writes the buffered documents and, when <paramref name="cursor"/> is set, the checkpoint (compared with where
    /// this run last saved it), in one unit of work under the run's lease; one by one on a store without units of work.
    /// </summary>
    private async ValueTask WriteBufferAsync(long? cursor, CancellationToken cancellationToken)
    {
        if (_services.Units is { } units)
        {
            var work = new UnitOfWork();
            _documents.AddTo(work);
            if (cursor is { } position)
            {
                work.SaveCheckpoint(_checkpointName, position, _saved);
                if (_lease is { } lease)
                {
                    work.RequireLease(lease);
                }
            }

            await units.CommitAsync(work, cancellationToken).ConfigureAwait(false);
        }
        else
        {
            await _documents.WriteThroughAsync(cancellationToken).ConfigureAwait(false);
            if (cursor is { } position)
            {
                await _services.Checkpoints.SaveAsync(_checkpointName, position, cancellationToken).ConfigureAwait(false);
            }
        }

        _documents.Committed();
    }

    private async Task<long> LoadStartAsync(CancellationToken stopping)
    {
        _rebuilding = await _services.Documents.GetAsync(ProjectionRebuild.StateCollection, Name, stopping).ConfigureAwait(false) is not null;
        _writer.Redirect = _rebuilding;
        _checkpointName = _rebuilding ? ProjectionRebuild.Shadow(Name) : Name;
        if (_rebuilding)
        {
            return await LoadRebuildStartAsync(stopping).ConfigureAwait(false);
        }

        var checkpoint = await _services.Checkpoints.LoadAsync(Name, stopping).ConfigureAwait(false);
        long cursor;
        long processed = 0;
        if (checkpoint is { } saved)
        {
            cursor = saved;
            _saved = saved;
        }
        else if (_options.StartFrom == SubscriptionStartPosition.End)
        {
            processed = await _services.Storage.GetHeadPositionAsync(stopping).ConfigureAwait(false);
            cursor = _streamId is null ? processed : (await _services.Storage.GetStreamStateAsync(_streamId, stopping).ConfigureAwait(false)).Version;

            // The end is where the subscription begins, once: a restart resumes here rather than at a later end,
            // which would skip what was appended while the application was down.
            _saved = 0;
            _pendingPosition = processed;
            await CommitAsync(cursor, SubscriptionState.CatchingUp, stopping).ConfigureAwait(false);
        }
        else
        {
            cursor = 0;
            _saved = 0;
        }

        if (_streamId is null)
        {
            processed = cursor;
        }

        Progress(cursor, processed, SubscriptionState.CatchingUp);
        return cursor;
    }

    /// <summary>Resumes (or starts) a rebuild: from the shadow checkpoint, into cleared shadows when it is at 0.</summary>
    private async Task<long> LoadRebuildStartAsync(CancellationToken stopping)
    {
        _liveSaved = await _services.Checkpoints.LoadAsync(Name, stopping).ConfigureAwait(false) ?? 0;
        var cursor = await _services.Checkpoints.LoadAsync(_checkpointName, stopping).ConfigureAwait(false) ?? 0;
        if (cursor == 0)
        {
            // A rebuild from the start: what an earlier, abandoned attempt left in the shadows goes.
            await ProjectionRebuild.ClearShadowsAsync(_services.Documents, _collections, stopping).ConfigureAwait(false);
            var parked = new List<string>();
            await foreach (var (id, _) in ParkedEvents.ListAsync(_services, _checkpointName, stopping).ConfigureAwait(false))
            {
                parked.Add(id);
            }

            foreach (var id in parked)
            {
                await _services.Documents.DeleteAsync(_services.Options.ParkedEventsCollection, id, stopping).ConfigureAwait(false);
            }
        }

        _saved = cursor;
        EventSourcingLog.RebuildResumed(_logger, Name, cursor);
        Progress(cursor, 0, SubscriptionState.CatchingUp);
        return cursor;
    }

    /// <summary>
    /// Swaps the caught-up shadow in, in one unit of work: the live collections become the shadow's documents, the
    /// parked events become the rebuild's, the live checkpoint moves to the shadow's position (which it must still be
    /// where this run found it), and the rebuild's record goes. Events after <paramref name="cursor"/> are then handled
    /// once, by the live run that continues from there.
    /// </summary>
    private async ValueTask SwapAsync(long cursor, CancellationToken cancellationToken)
    {
        var work = new UnitOfWork();
        await ProjectionRebuild.AddSwapAsync(work, _services.Documents, _collections, cancellationToken).ConfigureAwait(false);
        var parkedCollection = _services.Options.ParkedEventsCollection;
        await foreach (var (id, _) in ParkedEvents.ListAsync(_services, Name, cancellationToken).ConfigureAwait(false))
        {
            work.Delete(parkedCollection, id);
        }

        await foreach (var (id, parked) in ParkedEvents.ListAsync(_services, _checkpointName, cancellationToken).ConfigureAwait(false))
        {
            work.Delete(parkedCollection, id);
            work.Upsert(parkedCollection, ParkedEvents.Id(Name, parked.Position), ParkedEvents.Write(parked with { Subscription = Name }));
        }

        work.SaveCheckpoint(Name, cursor, _liveSaved);
        work.SaveCheckpoint(_checkpointName, 0, _saved);
        work.Delete(ProjectionRebuild.StateCollection, Name);
        await ProjectionRebuild.CommitSwapAsync(work, _services, _lease, cancellationToken).ConfigureAwait(false);

        _rebuilding = false;
        _writer.Redirect = false;
        _documents.Clear();
        _checkpointName = Name;
        _saved = cursor;
        _liveSaved = cursor;
        EventSourcingLog.RebuildSwapped(_logger, Name, cursor);
    }

    /// <summary>
    /// Reads the head, then the page after <paramref name="cursor"/>, whole. The head is read first: every selected
    /// event at or below it was committed when the page's read began. A page depends on nothing but the cursor, so the
    /// loop reads the next one while the previous page's documents and checkpoint commit (one round trip less per page
    /// on a store over a network); the documents the page folds into are read only after that commit
    /// (<see cref="ReadAheadAsync"/>), so they include it.
    /// </summary>
    private async Task<(long Head, List<StoredEvent> Page)> FetchPageAsync(long cursor, CancellationToken stopping)
    {
        var head = await _services.Storage.GetHeadPositionAsync(stopping).ConfigureAwait(false);
        var events = _streamId is null
            ? _services.Storage.ReadAllAsync(cursor, _selector.ReadFilter, _options.BatchSize, stopping)
            : _services.Storage.ReadStreamAsync(_streamId, ReadDirection.Forward, cursor + 1, _options.BatchSize, stopping);
        var page = new List<StoredEvent>(Math.Min(_options.BatchSize, 1024));
        await foreach (var stored in events.ConfigureAwait(false))
        {
            page.Add(stored);
        }

        return (head, page);
    }

    /// <summary>Lets a page read that nothing awaits any more end unobserved (its failure, if any, is dropped with it).</summary>
    private static void ObserveAbandoned(Task? read)
    {
        if (read is not null && !read.IsCompletedSuccessfully)
        {
            _ = read.ContinueWith(static t => _ = t.Exception, CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted | TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        }
    }

    /// <summary>
    /// A document projection's page: the documents its events fold into are read in one call (one round trip on a store
    /// over a network instead of one per event) before the events are handed out.
    /// </summary>
    private async ValueTask ReadAheadAsync(List<StoredEvent> page, DocumentReadAhead readAhead, CancellationToken stopping)
    {
        _decoded.Clear();
        var ids = new HashSet<string>(StringComparer.Ordinal);
        foreach (var stored in page)
        {
            if (_selector.Select(stored.StreamId, stored.EventType) != EventSelection.Handle)
            {
                continue;
            }

            try
            {
                var recorded = _services.Types.Deserialize(stored);
                _decoded[stored.Position] = recorded;
                if (readAhead.DocumentId(recorded) is { } id)
                {
                    ids.Add(id);
                }
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                // The event fails the same way when it is handled, which reports it (parks it or faults the projection).
            }
        }

        if (ids.Count > 0)
        {
            await _documents.PrefetchAsync(_writer.Map(readAhead.Collection), ids, stopping).ConfigureAwait(false);
        }
    }

    /// <summary>Handles one event; false when the subscription faulted on it.</summary>
    private async ValueTask<bool> HandleAsync(StoredEvent stored, CancellationToken aborting)
    {
        if (await TryHandleAsync(stored, aborting).ConfigureAwait(false) is not { } failure)
        {
            return true;
        }

        EventSourcingTelemetry.Failed.Add(1, _tags);
        if (_options.OnFailure == SubscriptionFailureMode.Park)
        {
            Park(stored, failure);
            return true;
        }

        EventSourcingLog.Faulted(_logger, failure, Name, stored.Position, stored.StreamId, stored.Version, stored.EventType);
        Fault(new SubscriptionFaultedException(Name, stored.Position, stored.StreamId, stored.Version, failure));
        return false;
    }

    /// <summary>Reads and handles one event through the pipeline; returns why it failed, or null when it was handled.</summary>
    /// <exception cref="OperationCanceledException"><paramref name="aborting"/> cut the handler off.</exception>
    private async ValueTask<Exception?> TryHandleAsync(StoredEvent stored, CancellationToken aborting)
    {
        RecordedEvent recorded;
        try
        {
            recorded = _decoded.Remove(stored.Position, out var decoded) ? decoded : _services.Types.Deserialize(stored);
        }
        catch (Exception ex) when (ex is UnknownEventTypeException or MessageDeserializationException)
        {
            return ex;
        }

        using var activity = EventSourcingTelemetry.StartHandle(Name, recorded);
        try
        {
            if (_pipeline is null)
            {
                _documents.BeginEvent();
                await _handler(recorded, _context, aborting).ConfigureAwait(false);
            }
            else
            {
                await _pipeline.ExecuteAsync(
                    static (state, ct) =>
                    {
                        state.Documents.BeginEvent();
                        return state.Handler(state.Event, state.Context, ct);
                    },
                    (Handler: _handler, Event: recorded, Context: _context, Documents: _documents),
                    aborting).ConfigureAwait(false);
            }

            _documents.AcceptEvent();
        }
        catch (OperationCanceledException) when (aborting.IsCancellationRequested)
        {
            throw;
        }
        catch (Exception ex) when (aborting.IsCancellationRequested)
        {
            // The handler failed because it was cut off at the stop deadline (for example it wrapped the cancellation
            // in its own exception). That says nothing about the event: it is neither parked nor a fault, and the
            // next run delivers it again.
            throw new OperationCanceledException($"Subscription '{Name}' was stopped while handling the event at position {stored.Position}.", ex, aborting);
        }
        catch (Exception ex)
        {
            _documents.BeginEvent();
            PatternsTelemetry.RecordError(activity, ex);
            return ex;
        }

        EventSourcingTelemetry.Handled.Add(1, _tags);
        return null;
    }

    private void FaultUnknown(StoredEvent stored)
    {
        var unknown = new UnknownEventTypeException(stored.EventType, stored.StreamId, stored.Version, stored.Position);
        EventSourcingTelemetry.Failed.Add(1, _tags);
        EventSourcingLog.Faulted(_logger, unknown, Name, stored.Position, stored.StreamId, stored.Version, stored.EventType);
        Fault(new SubscriptionFaultedException(Name, stored.Position, stored.StreamId, stored.Version, unknown));
    }

    private void Park(StoredEvent stored, Exception exception, string? subscription = null)
    {
        // While rebuilding, events are parked under the rebuild's name; the swap makes them the projection's.
        subscription ??= _checkpointName;
        EventSourcingLog.Parked(_logger, exception, Name, stored.Position, stored.StreamId, stored.Version, stored.EventType);
        var parked = new ParkedEvent(
            subscription, stored.EventId, stored.StreamId, stored.Version, stored.Position, stored.EventType,
            $"{exception.GetType().FullName}: {exception.Message}", _services.TimeProvider.GetUtcNow());
        _documents.Write(_services.Options.ParkedEventsCollection, ParkedEvents.Id(subscription, stored.Position), ParkedEvents.Write(parked));
        EventSourcingTelemetry.Parked.Add(1, _tags);
    }

    /// <summary>Hands the parked events to the handler again while the loop is stopped; returns how many were handled.</summary>
    private async Task<int> ReplayParkedLockedAsync(CancellationToken cancellationToken)
    {
        // Parked events are few; listing them first keeps the deletes below out of the paged listing.
        var entries = new List<(string Id, ParkedEvent Parked)>();
        await foreach (var entry in ParkedEvents.ListAsync(_services, Name, cancellationToken).ConfigureAwait(false))
        {
            entries.Add(entry);
        }

        var handled = 0;
        var collection = _services.Options.ParkedEventsCollection;
        foreach (var (id, parked) in entries)
        {
            StoredEvent? stored = null;
            await foreach (var e in _services.Storage.ReadAllAsync(parked.Position - 1, null, 1, cancellationToken).ConfigureAwait(false))
            {
                stored = e;
            }

            if (stored is null || stored.Position != parked.Position || stored.EventId != parked.EventId)
            {
                // The event is gone from the log (its stream was hard-deleted): there is nothing left to handle.
                _documents.Write(collection, id, null);
            }
            else if (await TryHandleAsync(stored, cancellationToken).ConfigureAwait(false) is { } failure)
            {
                EventSourcingTelemetry.Failed.Add(1, _tags);
                Park(stored, failure, Name);
            }
            else
            {
                _documents.Write(collection, id, null);
                handled++;
            }

            // The handler's writes and the parked record's removal (or its update) commit together.
            await CommitDocumentsAsync(cancellationToken).ConfigureAwait(false);
        }

        EventSourcingLog.ReplayedParked(_logger, Name, handled, entries.Count - handled);
        return handled;
    }

    private void Progress(long checkpoint, long processed, SubscriptionState? state)
    {
        List<TaskCompletionSource>? ready = null;
        lock (_gate)
        {
            _checkpoint = checkpoint;
            if (state is { } next && _state is not (SubscriptionState.Faulted or SubscriptionState.Recovering))
            {
                _state = next;
            }

            if (processed > _processed)
            {
                _processed = processed;
                for (var i = _waiters.Count - 1; i >= 0; i--)
                {
                    if (_waiters[i].Position <= processed)
                    {
                        (ready ??= []).Add(_waiters[i].Signal);
                        _waiters.RemoveAt(i);
                    }
                }
            }
        }

        ready?.ForEach(static s => s.TrySetResult());
    }

    private void Fault(SubscriptionFaultedException error)
    {
        List<TaskCompletionSource> waiters;
        lock (_gate)
        {
            _error = error;
            _state = SubscriptionState.Faulted;
            waiters = [.. _waiters.Select(w => w.Signal)];
            _waiters.Clear();
        }

        waiters.ForEach(w => w.TrySetException(error));
    }

    private async Task SaveFinalCheckpointAsync(long cursor)
    {
        try
        {
            await CommitAsync(cursor, null, CancellationToken.None).ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            EventSourcingLog.CheckpointFailed(_logger, ex, Name, cursor);
        }
    }
}

/// <summary>Parked events as documents: a flat JSON object written and read without reflection.</summary>
internal static class ParkedEvents
{
    public static string Id(string subscription, long position) =>
        string.Create(CultureInfo.InvariantCulture, $"{subscription}/{position:D19}");

    /// <summary>Lists one subscription's parked events in position order, with their document ids.</summary>
    public static async IAsyncEnumerable<(string Id, ParkedEvent Parked)> ListAsync(
        EventProcessorServices services, string subscription, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var prefix = subscription + "/";
        await foreach (var (id, document) in services.Documents.ListAsync(services.Options.ParkedEventsCollection, cancellationToken).ConfigureAwait(false))
        {
            // The prefix alone would also match a subscription whose name extends this one ("a" and "a/b").
            if (id.StartsWith(prefix, StringComparison.Ordinal) && Read(document) is { } parked
                && string.Equals(parked.Subscription, subscription, StringComparison.Ordinal))
            {
                yield return (id, parked);
            }
        }
    }

    public static ReadOnlyMemory<byte> Write(ParkedEvent parked)
    {
        var buffer = new ArrayBufferWriter<byte>(256);
        using (var writer = new Utf8JsonWriter(buffer))
        {
            writer.WriteStartObject();
            writer.WriteString("subscription", parked.Subscription);
            writer.WriteString("eventId", parked.EventId);
            writer.WriteString("streamId", parked.StreamId);
            writer.WriteNumber("version", parked.Version);
            writer.WriteNumber("position", parked.Position);
            writer.WriteString("eventType", parked.EventType);
            writer.WriteString("error", parked.Error);
            writer.WriteString("parkedAt", parked.ParkedAt);
            writer.WriteEndObject();
        }

        return buffer.WrittenMemory;
    }

    public static ParkedEvent Read(byte[] document)
    {
        using var json = JsonDocument.Parse(document);
        var root = json.RootElement;
        return new ParkedEvent(
            root.GetProperty("subscription").GetString()!,
            root.GetProperty("eventId").GetGuid(),
            root.GetProperty("streamId").GetString()!,
            root.GetProperty("version").GetInt64(),
            root.GetProperty("position").GetInt64(),
            root.GetProperty("eventType").GetString()!,
            root.GetProperty("error").GetString()!,
            root.GetProperty("parkedAt").GetDateTimeOffset());
    }
}
