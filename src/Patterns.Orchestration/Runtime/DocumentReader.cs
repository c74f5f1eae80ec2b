using Patterns.Storage;

namespace Patterns.Orchestration.Runtime;

/// <summary>
/// Reads the documents of one collection with at most a few reads in flight: a read that finds them all busy waits, and
/// the reads that waited meanwhile go together as one <see cref="IDocumentStorage.GetManyAsync"/> (one round trip on a
/// store over a network) when a read in flight completes. Each read still starts after it was asked for, so it sees every
/// change committed before. 10,000 workflows started at once read their instance records in a few dozen statements on
/// a few connections, instead of 10,000 statements that grew the connection pool to its limit.
/// </summary>
internal sealed class DocumentReader(IDocumentStorage documents, string collection, int maxInFlight)
{
    private readonly Lock _lock = new();
    private Dictionary<string, TaskCompletionSource<byte[]?>>? _waiting;
    private int _inFlight;

    public Task<byte[]?> ReadAsync(string id, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            if (_inFlight >= maxInFlight)
            {
                _waiting ??= new(StringComparer.Ordinal);
                if (!_waiting.TryGetValue(id, out var waiter))
                {
                    _waiting[id] = waiter = new TaskCompletionSource<byte[]?>(TaskCreationOptions.RunContinuationsAsynchronously);
                }

                return waiter.Task;
            }

            _inFlight++;
        }

        return ReadOneAsync(id, cancellationToken);
    }

    private async Task<byte[]?> ReadOneAsync(string id, CancellationToken cancellationToken)
    {
        try
        {
            return await documents.GetAsync(collection, id, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            Release(cancellationToken);
        }
    }

    /// <summary>Hands the finished read's place to the reads that wait (as one batch), or frees it.</summary>
    private void Release(CancellationToken cancellationToken)
    {
        Dictionary<string, TaskCompletionSource<byte[]?>>? batch;
        lock (_lock)
        {
            batch = _waiting;
            _waiting = null;
            if (batch is null)
            {
                _inFlight--;
                return;
            }
        }

        _ = ReadManyAsync(batch, cancellationToken);
    }

    private async Task ReadManyAsync(Dictionary<string, TaskCompletionSource<byte[]?>> batch, CancellationToken cancellationToken)
    {
        try
        {
            var found = await documents.GetManyAsync(collection, batch.Keys, cancellationToken).ConfigureAwait(false);
            foreach (var (id, waiter) in batch)
            {
                waiter.TrySetResult(found.GetValueOrDefault(id));
            }
        }
        catch (OperationCanceledException ex)
        {
            foreach (var waiter in batch.Values)
            {
                waiter.TrySetCanceled(ex.CancellationToken);
            }
        }
        catch (Exception ex)
        {
            foreach (var waiter in batch.Values)
            {
                waiter.TrySetException(ex);
            }
        }
        finally
        {
            Release(cancellationToken);
        }
    }
}
