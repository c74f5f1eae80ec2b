using Microsoft.Extensions.Logging;
using Patterns.Telemetry;

namespace Patterns.Batching;

/// <summary>A batcher fed by in-process producers; failed items go to the dead-letter callback (or the log).</summary>
internal sealed class InProcessBatcher<T> : BatchEngine<T>
{
    private readonly BatchHandler<T> _handler;
    private readonly Func<T, long>? _sizeOf;
    private readonly Func<FailedItem<T>, CancellationToken, ValueTask>? _onDeadLetter;

    public InProcessBatcher(
        BatchHandler<T> handler,
        BatchOptions options,
        Func<T, long>? sizeOf,
        BatchKeyIndex<T>? keys,
        Func<FailedItem<T>, CancellationToken, ValueTask>? onDeadLetter,
        TimeProvider timeProvider,
        ILogger logger,
        string name)
        : base(options, keys, tracked: false, timeProvider, logger, name, BatchingTelemetry.InProcessSystem)
    {
        _handler = handler;
        _sizeOf = sizeOf;
        _onDeadLetter = onDeadLetter;
    }

    internal override long SizeOf(T item) => _sizeOf is null ? 0 : _sizeOf(item);

    protected override ValueTask InvokeHandlerAsync(Batch<T> batch, CancellationToken cancellationToken) => _handler(batch, cancellationToken);

    protected override async ValueTask CompleteBatchAsync(BatchBuffer<T> buffer)
    {
        var failures = buffer.Failures!;
        var now = Time.GetUtcNow();
        var attempts = buffer.Attempt + 1;
        var tags = PatternsTelemetry.Tags(BatchingTelemetry.InProcessSystem, Name);
        for (var i = 0; i < buffer.Count; i++)
        {
            if (failures[i] is not { } exception)
            {
                continue;
            }

            PatternsTelemetry.DeadLettered.Add(1, tags);
            BatchingLog.ItemDeadLettered(Logger, exception, Name, attempts);
            if (_onDeadLetter is null)
            {
                continue;
            }

            try
            {
                // Not cancelled by the drain deadline: a dead letter must still be recorded on shutdown.
                await _onDeadLetter(new FailedItem<T>(buffer.Items[i], exception, attempts, Name, now), CancellationToken.None).ConfigureAwait(false);
            }
#pragma warning disable CA1031 // The callback is user code; its failure is logged and must not stop the batcher.
            catch (Exception ex)
#pragma warning restore CA1031
            {
                BatchingLog.DeadLetterCallbackFailed(Logger, ex, Name);
            }
        }
    }
}
