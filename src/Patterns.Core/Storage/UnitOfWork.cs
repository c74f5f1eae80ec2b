namespace Patterns.Storage;

/// <summary>
/// Writes to a store that commit together or not at all: event appends, document upserts and deletes, checkpoints,
/// inbox claims, outbox messages and lease fences. Build one, then hand it to
/// <see cref="IUnitOfWorkStorage.CommitAsync"/>.
/// </summary>
/// <remarks>
/// <para>
/// Nothing is written until the commit. The commit applies every part in one transaction: when any part fails (a wrong
/// expected version, an inbox entry that already exists, a checkpoint that moved, a lease that another owner holds),
/// none of it is visible and the commit throws that part's exception.
/// </para>
/// <para>
/// Within the unit, appends run in the order they were added (a second append to the same stream sees the first), and
/// the last change to a document wins. Outbox messages get store sequence numbers in the order they were added.
/// A unit of work is not thread-safe and is committed once; build a new one for each transaction.
/// </para>
/// </remarks>
public sealed class UnitOfWork
{
    private List<UnitOfWorkAppend>? _appends;
    private List<DocumentChange>? _documents;
    private List<CheckpointChange>? _checkpoints;
    private List<InboxClaim>? _inbox;
    private List<OutboxMessage>? _outbox;
    private List<Lease>? _fences;

    /// <summary>Gets the appends, in the order they were added.</summary>
    public IReadOnlyList<UnitOfWorkAppend> Appends => (IReadOnlyList<UnitOfWorkAppend>?)_appends ?? [];

    /// <summary>Gets the document changes, in the order they were made; for one document the last change wins.</summary>
    public IReadOnlyList<DocumentChange> Documents => (IReadOnlyList<DocumentChange>?)_documents ?? [];

    /// <summary>Gets the checkpoint changes.</summary>
    public IReadOnlyList<CheckpointChange> Checkpoints => (IReadOnlyList<CheckpointChange>?)_checkpoints ?? [];

    /// <summary>Gets the inbox claims: message ids that must not have been handled before by their consumer.</summary>
    public IReadOnlyList<InboxClaim> InboxClaims => (IReadOnlyList<InboxClaim>?)_inbox ?? [];

    /// <summary>Gets the outgoing messages, in the order they were added.</summary>
    public IReadOnlyList<OutboxMessage> Outbox => (IReadOnlyList<OutboxMessage>?)_outbox ?? [];

    /// <summary>Gets the leases that must still be held, with the same fencing token, when the unit commits.</summary>
    public IReadOnlyList<Lease> Fences => (IReadOnlyList<Lease>?)_fences ?? [];

    /// <summary>Gets a value indicating whether the unit holds no change at all.</summary>
    public bool IsEmpty => _appends is null && _documents is null && _checkpoints is null && _inbox is null && _outbox is null;

    /// <summary>Appends events to a stream.</summary>
    /// <param name="streamId">The stream.</param>
    /// <param name="expectedVersion">The version the stream must be at, as seen by this unit (after its earlier appends).</param>
    /// <param name="events">The events; at least one, with distinct ids.</param>
    /// <param name="inlineProjection">Runs inside the transaction with the stored events; its document writes commit with them.</param>
    /// <returns>This unit.</returns>
    /// <exception cref="ArgumentException">The stream id is empty, or the events are empty, null, untyped or repeat an id.</exception>
    public UnitOfWork Append(string streamId, ExpectedVersion expectedVersion, IReadOnlyList<SerializedEvent> events, InlineProjection? inlineProjection = null)
    {
        EventStorageArguments.ValidateAppend(streamId, events);
        (_appends ??= []).Add(new UnitOfWorkAppend(streamId, expectedVersion, events, inlineProjection));
        return this;
    }

    /// <summary>Inserts or replaces a document.</summary>
    /// <param name="collection">The collection.</param>
    /// <param name="id">The document id.</param>
    /// <param name="document">The document's bytes; the store copies them at commit.</param>
    /// <returns>This unit.</returns>
    /// <exception cref="ArgumentException">The collection or id is empty.</exception>
    public UnitOfWork Upsert(string collection, string id, ReadOnlyMemory<byte> document)
    {
        ValidateKey(collection, id);
        (_documents ??= []).Add(new DocumentChange(collection, id, document, IsDelete: false));
        return this;
    }

    /// <summary>Deletes a document; deleting a missing document is no error.</summary>
    /// <param name="collection">The collection.</param>
    /// <param name="id">The document id.</param>
    /// <returns>This unit.</returns>
    /// <exception cref="ArgumentException">The collection or id is empty.</exception>
    public UnitOfWork Delete(string collection, string id)
    {
        ValidateKey(collection, id);
        (_documents ??= []).Add(new DocumentChange(collection, id, default, IsDelete: true));
        return this;
    }

    /// <summary>Saves a checkpoint.</summary>
    /// <param name="name">The checkpoint's name (a subscription, projection, pipeline or relay).</param>
    /// <param name="position">The position to save.</param>
    /// <param name="expectedPosition">
    /// When set, the stored checkpoint must be exactly this position (a missing checkpoint counts as 0), or the commit
    /// fails with <see cref="CheckpointConflictException"/>: a writer that lost its place cannot move a checkpoint back.
    /// </param>
    /// <returns>This unit.</returns>
    /// <exception cref="ArgumentException">The name is empty.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A position is negative.</exception>
    public UnitOfWork SaveCheckpoint(string name, long position, long? expectedPosition = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentOutOfRangeException.ThrowIfNegative(position);
        if (expectedPosition is { } expected)
        {
            ArgumentOutOfRangeException.ThrowIfNegative(expected, nameof(expectedPosition));
        }

        (_checkpoints ??= []).Add(new CheckpointChange(name, position, expectedPosition));
        return this;
    }

    /// <summary>
    /// Records that a consumer handled a message. The commit fails with <see cref="DuplicateMessageException"/> when the
    /// consumer already recorded that id, so two copies handled at the same moment cannot both commit.
    /// </summary>
    /// <param name="consumer">The consumer (a consumer group, handler or projection name).</param>
    /// <param name="messageId">The message id.</param>
    /// <returns>This unit.</returns>
    /// <exception cref="ArgumentException">The consumer or message id is empty.</exception>
    public UnitOfWork ClaimInbox(string consumer, string messageId)
    {
        ArgumentException.ThrowIfNullOrEmpty(consumer);
        ArgumentException.ThrowIfNullOrEmpty(messageId);
        (_inbox ??= []).Add(new InboxClaim(consumer, messageId));
        return this;
    }

    /// <summary>Stores an outgoing message; a relay hands it to the transport after the commit.</summary>
    /// <param name="message">The message.</param>
    /// <returns>This unit.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="message"/> is null.</exception>
    public UnitOfWork Enqueue(OutboxMessage message)
    {
        ArgumentNullException.ThrowIfNull(message);
        (_outbox ??= []).Add(message);
        return this;
    }

    /// <summary>
    /// Makes the commit depend on a lease: unless the store still records <paramref name="lease"/>'s owner and fencing
    /// token, the commit fails with <see cref="LeaseLostException"/> and nothing is written.
    /// </summary>
    /// <param name="lease">The lease the writer holds.</param>
    /// <returns>This unit.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="lease"/> is null.</exception>
    public UnitOfWork RequireLease(Lease lease)
    {
        ArgumentNullException.ThrowIfNull(lease);
        (_fences ??= []).Add(lease);
        return this;
    }

    private static void ValidateKey(string collection, string id)
    {
        ArgumentException.ThrowIfNullOrEmpty(collection);
        ArgumentException.ThrowIfNullOrEmpty(id);
    }
}

/// <summary>One append of a <see cref="UnitOfWork"/>.</summary>
/// <param name="StreamId">The stream.</param>
/// <param name="ExpectedVersion">The version the stream must be at.</param>
/// <param name="Events">The events.</param>
/// <param name="InlineProjection">The inline projection to run in the transaction, or null.</param>
public sealed record UnitOfWorkAppend(string StreamId, ExpectedVersion ExpectedVersion, IReadOnlyList<SerializedEvent> Events, InlineProjection? InlineProjection);

/// <summary>One document change of a <see cref="UnitOfWork"/>.</summary>
/// <param name="Collection">The collection.</param>
/// <param name="Id">The document id.</param>
/// <param name="Document">The new document (empty for a delete).</param>
/// <param name="IsDelete">Whether the change deletes the document.</param>
public readonly record struct DocumentChange(string Collection, string Id, ReadOnlyMemory<byte> Document, bool IsDelete);

/// <summary>One checkpoint change of a <see cref="UnitOfWork"/>.</summary>
/// <param name="Name">The checkpoint's name.</param>
/// <param name="Position">The new position.</param>
/// <param name="ExpectedPosition">The position the stored checkpoint must have (a missing one counts as 0), or null for no check.</param>
public readonly record struct CheckpointChange(string Name, long Position, long? ExpectedPosition);

/// <summary>One inbox claim of a <see cref="UnitOfWork"/>.</summary>
/// <param name="Consumer">The consumer.</param>
/// <param name="MessageId">The message id.</param>
public readonly record struct InboxClaim(string Consumer, string MessageId);
