using Patterns.Storage;

namespace Patterns.Orchestration.Runtime;

/// <summary>
/// Reads the documents of one collection with at most a few reads in flight: a read that finds them all busy waits, and
/// the reads that waited meanwhile go together as one <see cref="IDocumentStorage.GetManyAsync"/> (one round trip on a
/// store over a network) when a read in flight completes. Each read still starts after it was asked for, so it sees every
/// change committed before. 10,000 workflows started at once read their instance records in a few dozen statements on
/// a few connections, instead of 10,000 statements that grew the connection pool to its limit.
/// </summary>
/// <remarks>
/// Every read runs under the one token given here (the runtime's stopping token), never a caller's: a batch serves
/// several callers, so one caller's cancellation must not cancel the others' reads. A batch holds at most
/// <see cref="MaxBatch"/> ids; the reads beyond it wait for the next place. A batch that fails for another reason than
/// cancellation is read again id by id, so a read that fails on its own (a bad id) fails only its caller.
/// </remarks>
internal sealed class DocumentReader(IDocumentStorage documents, string collection, int maxInFlight, CancellationToken stopping)
{
    /// <summary>The most ids read in one batch.</summary>
    public const int MaxBatch = 256;

    private readonly Lock _lock = new();
    private readonly Queue<Dictionary<string, TaskCompletionSource<byte[]?>>> _waiting = new();
    private Dictionary<string, TaskCompletionSource<byte[]?>>? _filling;
    private int _inFlight;

    public Task<byte[]?> ReadAsync(string id)
    {
        lock (_lock)
        {
            if (_inFlight >= maxInFlight)
            {
                var batch = _filling;
                if (batch is null || batch.Count >= MaxBatch)
                {
                    _filling = batch = new(StringComparer.Ordinal);
                    _waiting.Enqueue(batch);
                }

                if (!batch.TryGetValue(id, out var waiter))
                {
                    batch[id] = waiter = new TaskCompletionSource<byte[]?>(TaskCreationOptions.RunContinuationsAsynchronously);
                }

                return waiter.Task;
            }

            _inFlight++;
        }

        return ReadOneAsync(id);
    }

    private async Task<byte[]?> ReadOneAsync(string id)
    {
        try
        {
            return await documents.GetAsync(collection, id, stopping).ConfigureAwait(false);
        }
        finally
        {
            Release();
        }
    }

    /// <summary>Hands the finished read's place to the first batch of reads that wait, or frees it.</summary>
    private void Release()
    {
        Dictionary<string, TaskCompletionSource<byte[]?>>? batch;
        lock (_lock)
        {
            if (!_waiting.TryDequeue(out batch))
            {
                _inFlight--;
                return;
            }

            if (batch == _filling)
            {
                _filling = null;
            }
        }

        _ = ReadManyAsync(batch);
    }

    private async Task ReadManyAsync(Dictionary<string, TaskCompletionSource<byte[]?>> batch)
    {
        try
        {
            var found = await documents.GetManyAsync(collection, batch.Keys, stopping).ConfigureAwait(false);
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
        catch (Exception ex) when (batch.Count == 1)
        {
            foreach (var waiter in batch.Values)
            {
                waiter.TrySetException(ex);
            }
        }
        catch (Exception)
        {
            // One id may have failed the whole batch (a store refuses some ids): each read goes again on its own, a few at
            // a time, so each error reaches only the caller whose read it is.
            await ReadEachAsync(batch).ConfigureAwait(false);
        }
        finally
        {
            Release();
        }
    }

    private Task ReadEachAsync(Dictionary<string, TaskCompletionSource<byte[]?>> batch) =>
        Parallel.ForEachAsync(batch, new ParallelOptions { MaxDegreeOfParallelism = maxInFlight }, async (entry, _) =>
        {
            try
            {
                entry.Value.TrySetResult(await documents.GetAsync(collection, entry.Key, stopping).ConfigureAwait(false));
            }
            catch (OperationCanceledException ex)
            {
                entry.Value.TrySetCanceled(ex.CancellationToken);
            }
            catch (Exception ex)
            {
                entry.Value.TrySetException(ex);
            }
        });
}
