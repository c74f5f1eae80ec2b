using Patterns.EventSourcing;
using Patterns.Messaging;
using Patterns.Storage;

namespace Patterns.Outbox;

/// <summary>
/// A transactional session over the store: events appended, documents written, messages published or sent and inbox
/// entries claimed through it are committed together by <see cref="CommitAsync"/>, all or nothing. Messages are stored in
/// the outbox and handed to the transport by the outbox relay after the commit, at least once and in commit order per
/// partition key; a session that is not committed (or whose commit fails) publishes nothing.
/// </summary>
/// <remarks>
/// <para>
/// Resolve it from any provider (a handler's <see cref="MessageContext.Services"/>, a scope, or inject it); it is
/// registered by <c>AddOutbox()</c> as transient, so each resolution is a new session: resolve it once per unit of work
/// and pass it along. It is not thread-safe. After a commit the session is empty and may be used again.
/// </para>
/// <para>
/// In a message handler, call <see cref="Handles(MessageContext)"/> so that the commit also records the message in the
/// inbox: a second copy of the message then fails its commit with <see cref="DuplicateMessageException"/>, which the
/// consumer treats as already handled, so the handler's writes and messages happen once.
/// </para>
/// </remarks>
public interface IStoreSession
{
    /// <summary>Gets a value indicating whether the session holds anything to commit.</summary>
    bool HasChanges { get; }

    /// <summary>Appends events to a stream (inline projections run in the commit, as for <see cref="IEventStore.AppendAsync"/>).</summary>
    /// <param name="streamId">The stream.</param>
    /// <param name="expectedVersion">The version the stream must be at, after this session's earlier appends to it.</param>
    /// <param name="events">The events.</param>
    /// <exception cref="InvalidOperationException">Event sourcing is not registered (<c>AddEventSourcing</c>).</exception>
    void Append(string streamId, ExpectedVersion expectedVersion, IReadOnlyList<EventData> events);

    /// <summary>Inserts or replaces a document (a read model or any state).</summary>
    /// <typeparam name="TDocument">The document type.</typeparam>
    /// <param name="collection">The collection.</param>
    /// <param name="id">The document id.</param>
    /// <param name="document">The document.</param>
    void Store<TDocument>(string collection, string id, TDocument document)
        where TDocument : class;

    /// <summary>Deletes a document.</summary>
    /// <param name="collection">The collection.</param>
    /// <param name="id">The document id.</param>
    void Delete(string collection, string id);

    /// <summary>Publishes a message to a topic once the session commits.</summary>
    /// <typeparam name="TMessage">The message type.</typeparam>
    /// <param name="topic">The topic; the message type's name when null.</param>
    /// <param name="message">The message.</param>
    /// <param name="options">Message id, partition key, correlation, headers.</param>
    void Publish<TMessage>(string? topic, TMessage message, MessageOptions options = default)
        where TMessage : notnull;

    /// <summary>Sends a message to a queue once the session commits.</summary>
    /// <typeparam name="TMessage">The message type.</typeparam>
    /// <param name="queue">The queue.</param>
    /// <param name="message">The message.</param>
    /// <param name="options">Message id, partition key, correlation, headers.</param>
    void Send<TMessage>(string queue, TMessage message, MessageOptions options = default)
        where TMessage : notnull;

    /// <summary>Records the message being handled in the inbox of its consumer group, in the same commit.</summary>
    /// <param name="context">The handler's message context.</param>
    /// <remarks>Follow-up messages then keep the handled message's correlation id, and name it as their cause.</remarks>
    void Handles(MessageContext context);

    /// <summary>Commits everything the session holds in one transaction, or nothing.</summary>
    /// <param name="cancellationToken">Cancels the commit while it has not started.</param>
    /// <returns>The unit of work's result.</returns>
    /// <exception cref="DuplicateMessageException">The message named by <see cref="Handles"/> was handled before.</exception>
    /// <exception cref="WrongExpectedVersionException">An append found its stream at another version.</exception>
    ValueTask<UnitOfWorkResult> CommitAsync(CancellationToken cancellationToken = default);
}
